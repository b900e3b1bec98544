"""The command line's own error, in a module that imports nothing: :mod:`fnnet.app.cli` (which
parses without loading JAX) and :mod:`fnnet.app.commands` both raise it."""


class UsageError(Exception):
    """A bad command-line argument: printed as one line, exit code 2."""
