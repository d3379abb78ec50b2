"""``python -m csdn.demo``: the same as ``csdn demo`` (see :mod:`csdn.cli.demo`), for when the ``csdn``
script is not on PATH."""

import sys

from csdn.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
