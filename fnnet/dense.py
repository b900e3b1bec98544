"""Kept so that ``fnnet.dense`` still imports: the layer lives in :mod:`fnnet.layers.dense`."""

from fnnet.layers.dense import *  # noqa: F401,F403
