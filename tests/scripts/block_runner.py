"""Runs documentation blocks, each alone in a fresh process forked from this one.

This process only imports the libraries the blocks use (jax, numpy, optax, matplotlib, fnnet):
no JAX backend is started and nothing is computed, so a fork is safe and each child starts as
a new interpreter would, minus about a second of imports per block. Each child runs one block as
``__main__`` in its own namespace, in the request's folder and environment, and exits: nothing
one block does can reach another.

Protocol: one JSON request per line on stdin, ``{"code", "filename", "cwd", "env"}``; one JSON
reply per line on stdout, ``{"returncode", "stderr"}``.
"""
import importlib
import json
import os
import sys
import tempfile
import traceback

import matplotlib
from jax._src import xla_bridge

LIBRARIES = ("jax", "jax.numpy", "numpy", "optax", "fnnet", "fnnet.app.runs", "fnnet.gpt", "fnnet.gradcheck",
             "fnnet.train", "fnnet.tracing")
"""Imported once here, for every child."""

for name in LIBRARIES:
    importlib.import_module(name)
matplotlib.use("Agg")
assert not xla_bridge._backends, "a JAX backend started before the fork: children would share its threads"


def run_block(request: dict) -> int:
    """In the child: the block's folder and environment, its stderr to the reply, then the block."""
    os.chdir(request["cwd"])
    os.environ.update(request["env"])
    try:
        exec(compile(request["code"], request["filename"], "exec"), {"__name__": "__main__"})
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001  (the block's own failure, reported as a traceback)
        traceback.print_exc()
        return 1


def main():
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryFile() as errors:
            pid = os.fork()
            if pid == 0:  # the child: never returns
                os.dup2(errors.fileno(), 2)
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                sys.stdin.close()
                code = 1
                try:
                    code = run_block(request)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            errors.seek(0)
            reply = {"returncode": os.waitstatus_to_exitcode(status),
                     "stderr": errors.read().decode(errors="replace")[-3000:]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
