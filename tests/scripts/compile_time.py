"""A pytest plugin that says which tests spend the suite's time compiling: JAX's compile events
(``/jax/core/compile/*``: tracing, lowering, XLA's backend compile) summed per test, in each
worker, written to ``$COMPILE_LOG.<worker>.json`` at the end (default ``/tmp/fnnet-compile``).

Run it on a cold cache, from the repository root::

    FNNET_TEST_XLA_CACHE=off PYTHONPATH=tests/scripts python -m pytest -m "not slow" -n 2 -p compile_time
    python tests/scripts/compile_time.py          # the tests and files with the most compile seconds

A test that runs a layer op by op (eagerly) compiles a small program per operation and shape; the
same test under ``jax.jit`` compiles one per shape.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import sys

_LOG = os.environ.get("COMPILE_LOG", "/tmp/fnnet-compile")
_current = {"test": "(collection)"}
_seconds: collections.Counter = collections.Counter()
_events: collections.Counter = collections.Counter()


def _listener(event, duration, **kwargs):
    if event.startswith("/jax/core/compile/"):
        _seconds[_current["test"]] += duration
        _events[_current["test"]] += 1


def pytest_configure(config):
    from jax import monitoring
    monitoring.register_event_duration_secs_listener(_listener)


def pytest_runtest_setup(item):
    _current["test"] = item.nodeid


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"{_LOG}.{worker}.json", "w") as out:
        json.dump({"seconds": _seconds, "events": _events}, out)


def main(top: int = 25) -> None:
    seconds, events = collections.Counter(), collections.Counter()
    for path in glob.glob(f"{_LOG}.*.json"):
        with open(path) as log:
            data = json.load(log)
        seconds.update(data["seconds"])
        events.update(data["events"])
    by_file = collections.Counter()
    for test, value in seconds.items():
        by_file[test.split("::")[0]] += value
    print(f"{sum(seconds.values()):.0f} s compiling, {sum(events.values())} compile events")
    for name, value in by_file.most_common(top // 2):
        print(f"{value:7.1f} s  {name}")
    print()
    for name, value in seconds.most_common(top):
        print(f"{value:7.1f} s  {events[name]:5d} events  {name}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
