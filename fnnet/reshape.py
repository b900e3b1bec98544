"""Kept so that ``fnnet.reshape`` still imports: the layer lives in :mod:`fnnet.layers.reshape`."""

from fnnet.layers.reshape import *  # noqa: F401,F403
