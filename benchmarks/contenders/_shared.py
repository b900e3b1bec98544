"""What the MLP/XOR contenders share: the workload's optax optimizer and the eager peers' loop."""

from __future__ import annotations


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
