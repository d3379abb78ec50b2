"""``python -m csdn ...``: the same as the ``csdn`` command (and what
``torchrun --nproc_per_node=K -m csdn train ...`` runs in each process)."""

import sys

from csdn.cli import main

if __name__ == "__main__":
    sys.exit(main())
