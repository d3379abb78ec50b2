"""``python -m csdn.train ...`` (also the entry point for ``torchrun -m csdn.train``)."""

import sys

from csdn.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
