"""What the contenders share: the workload's optax optimizer, fnnet's fit timed per epoch, and the
eager peers' loop."""

from __future__ import annotations


COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
"""JAX's monitoring events that together time a program's tracing, lowering and XLA compilation."""


def fit_seconds(model, loss, optimizer, data, *, epochs: int, **fit_options) -> list[float]:
    """Seconds of each epoch of one ``fnnet.train.fit`` run, the first one with the compilation.

    ``fit`` compiles its epoch on a background thread while the model initialises, so its first
    epoch's own time no longer holds the compilation. A plain-JAX contender's first epoch counts
    its compilation (tracing, lowering, XLA) and not its model's initialisation (done before, in
    ``__init__``); so here the model is initialised once first (JAX keeps the init's small
    programs), and the tracing, lowering and compiling JAX reports during ``fit`` (its monitoring
    events, from any thread) are added to the first epoch's time."""
    import jax
    from jax import monitoring

    from fnnet import train

    key = jax.random.PRNGKey(0)
    jax.block_until_ready(train.init_state(model, optimizer, key, data[0].shape[1:]))
    compiling = []
    monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compiling.append(seconds) if event in COMPILE_EVENTS else None)
    _, history = train.fit(model, loss, optimizer, data, epochs=epochs, key=key, **fit_options)
    return [history.seconds[0] + sum(compiling)] + list(history.seconds[1:])


def optax_for(workload):
    """``optax.adam`` or ``optax.sgd`` at the workload's learning rate."""
    import optax

    return optax.adam(workload.lr) if workload.optimizer == "adam" else optax.sgd(workload.lr)


class EagerLoop:
    """A Python loop calling ``self._step(x_batch, y_batch)``: XOR full-batch, or in-order batches."""

    def run_epoch(self):
        w = self.w
        if w.kind == "xor":
            for _ in range(w.steps):
                self._step(self.x, self.y)
            return w.steps
        count = 0
        for start in range(0, w.n - w.batch + 1, w.batch):
            self._step(self.x[start:start + w.batch], self.y[start:start + w.batch])
            count += w.batch
        return count
