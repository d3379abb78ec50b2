"""``csdn synth``: write a synthetic SYSU-MM01 / RegDB / LLCM tree (:mod:`csdn.data.synthetic`) for
smoke tests and demos."""

from __future__ import annotations

import argparse

from csdn.data.synthetic import LAYOUTS
from csdn.errors import cli_flags

_DEFAULT_IMAGES = {"sysu": 4, "regdb": 10, "llcm": 3}  # per camera (sysu, llcm) or per modality (regdb)


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``synth`` to an ``argparse`` sub-command collection."""
    parser = commands.add_parser(
        "synth",
        help="write a synthetic visible/infrared dataset in a benchmark's layout",
        description=(
            "Write procedurally generated visible and infrared pedestrian crops in the on-disk "
            "layout of SYSU-MM01, RegDB or LLCM. The same seed gives byte-identical files."
        ),
    )
    parser.add_argument("--layout", choices=LAYOUTS, required=True, help="which benchmark's layout to write")
    parser.add_argument("--root", required=True, help="output folder (must be new or empty)")
    parser.add_argument("--train-ids", type=int, default=32, help="training identities (default 32)")
    parser.add_argument("--test-ids", type=int, default=16, help="test identities (default 16)")
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per identity and camera (sysu 4, llcm 3) or per modality (regdb 10)",
    )
    parser.add_argument("--trials", type=int, default=None, help="regdb: number of split trials (default 10)")
    parser.add_argument("--cameras", type=int, default=None, help="llcm: number of cameras, 2..9 (default 9)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"), help="image size (default 128 64)"
    )
    parser.add_argument(
        "--format", choices=("bmp", "jpg"), default=None, help="regdb: image file format (default bmp, as RegDB)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_synth)
    return [parser]


# the writers' argument names -> this command's flags, so their errors name the flags
_FLAGS = {
    "num_train_ids": "--train-ids",
    "num_test_ids": "--test-ids",
    "images_per_camera": "--images",
    "images_per_modality": "--images",
    "num_trials": "--trials",
    "num_cameras": "--cameras",
}


def run_synth(args: argparse.Namespace) -> int:
    """Handler for ``csdn synth``; returns the process exit code."""
    with cli_flags({**args.flags, **_FLAGS}):
        return _synth(args)


def _synth(args: argparse.Namespace) -> int:
    from csdn.data.synthetic import write_llcm, write_regdb, write_sysu

    only = {"--trials": ("regdb", args.trials), "--format": ("regdb", args.format), "--cameras": ("llcm", args.cameras)}
    for flag, (layout, value) in only.items():
        if value is not None and args.layout != layout:
            raise ValueError(f"{flag} applies to --layout {layout} only, not {args.layout}")
    common = dict(seed=args.seed, size=tuple(args.size), progress=not args.quiet)
    images = _DEFAULT_IMAGES[args.layout] if args.images is None else args.images
    if args.layout == "sysu":
        result = write_sysu(args.root, args.train_ids, args.test_ids, images, **common)
    elif args.layout == "regdb":
        trials = 10 if args.trials is None else args.trials
        fmt = args.format or "bmp"
        result = write_regdb(args.root, args.train_ids, args.test_ids, images, trials, image_format=fmt, **common)
    else:
        cameras = 9 if args.cameras is None else args.cameras
        result = write_llcm(args.root, args.train_ids, args.test_ids, images, cameras, **common)
    print(f"wrote {result.num_images} images of {result.num_ids} identities ({args.layout} layout) to {result.root}")
    return 0
