"""``csdn eval``: score a model on SYSU-MM01, RegDB or LLCM with the benchmark's standard protocol,
or on a user's identity-per-folder images, and print (or write as JSON) rank-1/5/10/20, mAP and mINP."""

from __future__ import annotations

import argparse
from pathlib import Path

from csdn.cli.embed import MODEL_HELP, add_device_option, add_overwrite_option, load_model, say_device
from csdn.data.catalog import DATASET_NAMES


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``eval`` to an ``argparse`` sub-command collection."""
    parser = commands.add_parser(
        "eval",
        help="evaluate a model on SYSU-MM01, RegDB, LLCM (standard protocol) or your own image folder",
        description=(
            "Embed every test image once, score every trial of the benchmark's standard protocol, "
            "and print rank-1/5/10/20, mAP and mINP (mean and std over trials), per search direction. "
            "--dataset folder reads ROOT/visible/<pid>/* and ROOT/infrared/<pid>/* (identity = the "
            "integer folder name) and searches every image of one modality among all of the other."
        ),
    )
    parser.add_argument(
        "--dataset", required=True, choices=DATASET_NAMES, help="which benchmark, or 'folder' for your own images"
    )
    parser.add_argument(
        "--root",
        required=True,
        help="the dataset folder, in its distributed layout (folder: visible/<pid>/ and infrared/<pid>/)",
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--mode", choices=("all", "indoor"), help="sysu: all-search (default) or indoor-search")
    parser.add_argument(
        "--shots",
        type=int,
        choices=(1, 10),
        help="sysu/llcm: images drawn per identity and camera, the gallery (llcm visible->infrared: the probes); default 1",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="sysu/llcm: score every setting in one run (sysu: all/indoor x single/multi-shot) and print the "
        "literature's table (Rank-1/10/20, mAP, mINP, mean ± std over trials); not with --mode/--shots",
    )
    parser.add_argument(
        "--trials",
        type=int,
        nargs="+",
        metavar="T",
        help="trials to score (default: sysu/llcm 0-9; regdb: the trial the model was trained on, "
        "as its saved metadata records, else 1)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="regdb: score trials whose test identities the model was trained on (refused by default)",
    )
    parser.add_argument(
        "--direction",
        nargs="+",
        help="query->gallery, e.g. infrared->visible, visible->thermal, t2v (default: every direction the protocol reports)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the full result (per-trial scores, CMC) as JSON")
    add_overwrite_option(parser, "replace an existing --json file")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (NOT the paper's protocol)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument(
        "--cache-dir", help="keep embeddings here, so a second evaluation of the same weights embeds nothing"
    )
    parser.add_argument(
        "--no-flip", action="store_true", help="no flip test-time augmentation (the paper's protocol uses it)"
    )
    add_device_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_eval)
    return [parser]


def run_eval(args: argparse.Namespace) -> int:
    """Handler for ``csdn eval``; returns the process exit code."""
    from csdn.evaluation.protocol import evaluate, evaluate_table

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.json:
        from csdn.system.fileio import refuse_existing

        if Path(args.json).suffix.lower() != ".json":
            raise ValueError(f"--json {args.json} must end in .json")
        if not args.overwrite:  # before the evaluation, which may take an hour
            refuse_existing([args.json])
    if args.table and (args.mode or args.shots):
        raise ValueError("--table scores every --mode and --shots setting; leave those options out")
    settings = {} if args.table else {"mode": args.mode, "shots": args.shots}
    model = load_model(args)
    result = (evaluate_table if args.table else evaluate)(
        model,
        args.dataset,
        args.root,
        **settings,
        trials=args.trials,
        direction=args.direction,
        rerank=args.rerank,
        batch_size=args.batch_size,
        flip=not args.no_flip,
        progress=not args.quiet,
        cache_dir=args.cache_dir,
        allow_overlap=args.allow_overlap,
    )
    print(result)
    say_device(args.device)
    if args.json:
        from csdn.system.fileio import atomic_write_text

        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, result.to_json() + "\n")
        print(f"wrote {out}")
    return 0
