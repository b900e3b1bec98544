"""Kept so that ``fnnet.activations`` still imports: the layer lives in :mod:`fnnet.layers.activations`."""

from fnnet.layers.activations import *  # noqa: F401,F403
