"""``python -m fnnet``: the same command line as the ``fnnet`` script."""

from fnnet.app.cli import entry_point

if __name__ == "__main__":
    entry_point()
