"""``python -m fnnet``: the same command line as the ``fnnet`` script."""

from fnnet.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
