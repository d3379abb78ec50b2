"""``python -m csdn ...``: the same as the ``csdn`` command."""

import sys

from csdn.cli import main

if __name__ == "__main__":
    sys.exit(main())
