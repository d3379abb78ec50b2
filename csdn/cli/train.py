"""``csdn train``: the command-line face of :func:`csdn.train.fit`.

Every :class:`TrainConfig` field is an option (``stage3_lr`` -> ``--stage3-lr``);
``--epochs-stage1/2/3`` are short aliases for the stage lengths. Under
``torchrun --nproc_per_node=K -m csdn train ...`` each process joins the group
from the environment and trains its shard.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from csdn.data.registry import DATASET_NAMES
from csdn.train.config import AUTOCAST_PRECISIONS, RECIPES, TrainConfig

_ALIASES = {"stage1_epochs": "--epochs-stage1", "stage2_epochs": "--epochs-stage2", "stage3_epochs": "--epochs-stage3"}


def _config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hyper-parameters (default: the paper's)")
    for field in dataclasses.fields(TrainConfig):
        flags = [f"--{field.name.replace('_', '-')}"] + ([_ALIASES[field.name]] if field.name in _ALIASES else [])
        default = field.default
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": f"default: {default}"}
        if isinstance(default, bool):
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif isinstance(default, tuple):
            kwargs.update(nargs="*", type=int)
        elif field.name == "precision":
            kwargs.update(choices=AUTOCAST_PRECISIONS)
        elif field.name == "recipe":
            kwargs.update(
                choices=tuple(RECIPES),
                help="reference: the authors' training code (nengdong96/CSDN at 2224959, MSEL included), quirks included "
                "(default); clean: each quirk corrected",
            )
        elif default is None or isinstance(default, int):
            kwargs.update(type=int)
        else:
            kwargs.update(type=type(default))
        group.add_argument(*flags, **kwargs)


def register(commands: Any) -> list[argparse.ArgumentParser]:
    """Add ``train`` to an ``argparse`` sub-command collection."""
    parser = commands.add_parser(
        "train",
        help="train CSDN's three stages on a dataset",
        description="Train CSDN (prompts, SII fusion, image model) on a dataset.",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        choices=DATASET_NAMES,
        help="benchmark reader, or 'folder' for ROOT/visible/<pid>/ + ROOT/infrared/<pid>/",
    )
    parser.add_argument("--root", required=True, help="dataset directory")
    parser.add_argument("--output", required=True, help="run directory (checkpoints, log.jsonl, final model)")
    parser.add_argument(
        "--init", default="RN50", help="RN50 (OpenAI CLIP), a local CLIP weight file, 'tiny', or a saved CSDN model"
    )
    parser.add_argument("--trial", type=int, default=None, help="RegDB split (1-10)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.add_argument("--stop-after", type=int, default=None, help="train at most N (>= 1) epochs in this call")
    parser.add_argument(
        "--workers", dest="num_workers", type=int, default=0, help="data-loading worker processes (default: 0)"
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="evaluate on the dataset's test protocol every N stage-3 epochs, logged only: "
        "the final model is the last one, never picked on test data (0: never)",
    )
    parser.add_argument(
        "--no-pixel-cache",
        action="store_true",
        help="decode every stage-3 image file at every step instead of once into OUTPUT/pixel-cache/ "
        "(same batches; slower)",
    )
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write the epoch values to OUTPUT/tensorboard (needs: pip install 'csdn-reid[tensorboard]')",
    )
    parser.add_argument("--config", default=None, help="JSON file of TrainConfig fields (options override it)")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="train on the readable images, listing the others (default: stop before training "
        "and list every unreadable image)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or summary")
    _config_options(parser)
    parser.set_defaults(func=run_train)
    return [parser]


def config_from_args(args: argparse.Namespace) -> TrainConfig | None:
    """The TrainConfig the options describe; None when none is given (paper defaults, or a resumed run's own)."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            values.update(json.loads(Path(args.config).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise ValueError(f"--config {args.config} is not a JSON object of TrainConfig fields ({err})") from None
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name)
        if value is not None:
            values[field.name] = tuple(value) if isinstance(field.default, tuple) else value
    return TrainConfig.from_dict(values) if values else None


def _protocol_evaluator(dataset: str, root: str, options: Mapping[str, Any]) -> Callable:
    """``model -> {"rank1", "mAP", "mINP"}`` on the dataset's standard test protocol."""
    if dataset == "folder":
        raise ValueError(
            "--eval-every needs a benchmark dataset (sysu, regdb, llcm): on --dataset folder it would "
            "score the very images the model trains on; evaluate on a separate folder of other "
            "identities afterwards with csdn eval --dataset folder"
        )
    from csdn.evaluation import evaluate

    def run(model) -> dict[str, float]:
        # RegDB and LLCM report two directions; model selection follows the protocol's first
        search = evaluate(model, dataset, root=root, progress=False, **options).searches[0]
        return {name: float(search.mean[name]) for name in ("rank1", "mAP", "mINP")}

    return run


def run_train(args: argparse.Namespace) -> int:
    from csdn.system.device import resolve_device
    from csdn.train import ddp as distributed
    from csdn.train.trainer import fit

    if args.device is not None:
        resolve_device(args.device)  # before any process group or data: "cuda" on a CPU build says so now
    if args.eval_every < 0:
        raise ValueError(f"--eval-every must be 0 (never) or a number of epochs, got {args.eval_every}")
    config = config_from_args(args)
    options = {"trial": args.trial} if args.trial is not None else {}
    protocol = {"trials": [args.trial]} if args.trial is not None else {}
    evaluate = _protocol_evaluator(args.dataset, args.root, protocol) if args.eval_every > 0 else None
    distributed.init_from_environment(args.device)
    try:
        fit(
            args.dataset,
            config,
            root=args.root,
            output_dir=args.output,
            init=args.init,
            evaluate=evaluate,
            eval_every=max(1, args.eval_every),
            device=args.device,
            resume=args.resume,
            num_workers=args.num_workers,
            progress=not args.no_progress,
            stop_after=args.stop_after,
            dataset_options=options,
            on_error="skip" if args.skip_bad_images else "raise",
            tensorboard=args.tensorboard,
            pixel_cache=not args.no_pixel_cache,
        )
    finally:
        distributed.shutdown()
    return 0
