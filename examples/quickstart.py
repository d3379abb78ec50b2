"""Quickstart: find the visible-camera photos of people seen by an infrared camera, offline.

    python examples/quickstart.py                       # writes ./csdn_demo_ranking.png
    python examples/quickstart.py --output ranking.png

The same as the installed command ``csdn demo`` (its code is csdn/cli/demo.py, written to be
read): the demo model bundled with csdn-reid (``synthetic-tiny``, no download) ranks the
visible images of people it has never seen for each of their infrared images, prints the top
matches with rank-1 and mAP, and draws the ranked results (green border: the same person,
red: someone else). Runs in seconds on a CPU. The demo model only knows synthetic images:
for real cameras load a model trained on real data.
"""

import sys

from csdn.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
