"""Data-parallel training on several devices and hosts, with JAX's own sharding machinery.

fnnet adds no communication code of its own. Training over a
``jax.sharding.Mesh`` works like this:

* the data set and the :class:`fnnet.train.TrainState` (parameters, optimizer
  state) are **replicated** on every device of the mesh;
* each batch is gathered from the data and constrained to
  ``NamedSharding(mesh, P(axis))``: every device computes the forward and the
  hand-written backward for its slice of the examples;
* the ``dW = xᵀ·δ`` of each layer is a sum over examples, so XLA turns it into a
  partial sum per device plus an all-reduce, inside the one jitted step.

Single machine, all devices::

    mesh = fnnet.distributed.data_mesh()            # every device of this process
    state, history = fnnet.train.fit(..., mesh=mesh)

Several machines: start one process per host with the same program, call
:func:`initialize` first (see the README), then build the mesh from
``jax.devices()``, which then lists the devices of every host.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnnet import xla_options
from fnnet.gradients import loss_and_grads

DATA_AXIS = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None,
               cpu_collectives: str | None = None, **kwargs) -> None:
    """Joins a multi-process JAX job: a thin wrapper of ``jax.distributed.initialize``.

    Call it once per process, before any other JAX call. Arguments default to the
    environment: ``FNNET_COORDINATOR`` (``host:port`` of process 0),
    ``FNNET_NUM_PROCESSES`` and ``FNNET_PROCESS_ID``; on managed clusters (SLURM,
    Kubernetes, Cloud TPU) JAX can also detect them itself, leave them unset there.

    Args:
      cpu_collectives: ``"gloo"`` (or ``"mpi"``) to run cross-process collectives on
        CPU devices, e.g. to test on one machine; GPUs use NCCL without it.
      kwargs: passed on to ``jax.distributed.initialize`` (timeouts...).
    """
    coordinator_address = coordinator_address or os.environ.get("FNNET_COORDINATOR")
    if num_processes is None and "FNNET_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["FNNET_NUM_PROCESSES"])
    if process_id is None and "FNNET_PROCESS_ID" in os.environ:
        process_id = int(os.environ["FNNET_PROCESS_ID"])
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids, **kwargs)


def data_mesh(devices=None, axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes) for data parallelism."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (axis_name,))


def _put_replicated(tree, sharding):
    """Places host values on every device of ``sharding`` (works across processes too)."""

    def put(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.device_put(leaf, sharding)
        value = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree)


class DataParallel:
    """Where data, state and batches live when training over ``mesh`` (used by ``fit``)."""

    def __init__(self, mesh: Mesh, batch_size: int):
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        self.mesh = mesh
        self.axis = mesh.axis_names[0]
        self.devices = mesh.shape[self.axis]
        if batch_size % self.devices:
            raise ValueError(f"batch_size {batch_size} does not divide evenly over the mesh's "
                             f"{self.devices} devices on axis {self.axis!r}; use a multiple of "
                             f"{self.devices} (e.g. {self.devices * max(1, batch_size // self.devices)})")
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.batch = NamedSharding(mesh, PartitionSpec(self.axis))

    def put_data(self, array):
        return _put_replicated(jnp.asarray(array) if not isinstance(array, np.ndarray) else array,
                               self.replicated)

    def put_state(self, state):
        return _put_replicated(state, self.replicated)

    def constrain_batch(self, array):
        """Splits a batch's example axis over the devices (inside jit)."""
        return jax.lax.with_sharding_constraint(array, self.batch)

    def jit_epoch(self, epoch, model):
        """``epoch`` jitted to run on the mesh (the state donated), with fnnet's XLA options for
        ``model`` (:func:`fnnet.xla_options.jit`)."""
        return xla_options.jit(epoch, model, donate_argnums=0, out_shardings=self.replicated)


def loss_and_grads_over(mesh: Mesh, model, loss, params, x, y, *, weights=None, state=(), key=None, **options):
    """:func:`fnnet.gradients.loss_and_grads`, each device of ``mesh``'s first axis on its share of the
    batch at the same time (``jax.shard_map``; the batch must divide evenly): the loss and the gradients
    averaged over the shares (each weighted by its examples, or by the sum of its ``weights``: the mean
    over the whole batch), the prediction in batch order, a new model state averaged over the devices
    (integer leaves: the largest); a ``key`` is folded with the device's index (each share its own
    dropout masks, so a model with dropout draws other masks than on one device).

    Why a ``shard_map`` and not :class:`DataParallel`'s sharded batch: the XLA partitioner does not split
    a ``lax.scan``'s work over the devices (a char-rnn's step took longer on 2 CPU devices that way,
    40.5 ms against 30.5 on one), where each device running its own share does (22.8 ms).
    """
    axis = mesh.axis_names[0]

    def share(params, x, y, weights, state, key):
        if key is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis))
        value, grads, pred, new_state = loss_and_grads(model, loss, params, x, y, weights=weights, state=state,
                                                       key=key, **options)
        size = jnp.asarray(jax.tree.leaves(y)[0].shape[0] if weights is None else jnp.sum(weights), jnp.float32)
        total = jnp.maximum(jax.lax.psum(size, axis), 1)

        def mean(tree):
            return jax.tree.map(lambda a: (jax.lax.psum(a * size.astype(a.dtype), axis) / total.astype(a.dtype)), tree)

        new_state = jax.tree.map(lambda a: jax.lax.pmean(a, axis) if jnp.issubdtype(a.dtype, jnp.inexact)
                                 else jax.lax.pmax(a, axis), new_state)
        return mean(value), mean(grads), pred, new_state

    every, batch = PartitionSpec(), PartitionSpec(axis)    # replicated; split over the devices
    return jax.shard_map(share, mesh=mesh, in_specs=(every, batch, batch, batch, every, every),
                         out_specs=(every, every, batch, every))(params, x, y, weights, state, key)
