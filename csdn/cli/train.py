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

from csdn.data.catalog import DATASET_NAMES
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
        choices=DATASET_NAMES,
        help="benchmark reader, or 'folder' for ROOT/visible/<pid>/ + ROOT/infrared/<pid>/ (or [data] in --config)",
    )
    parser.add_argument("--root", help="dataset directory (or [data] root in --config)")
    parser.add_argument("--output", help="run directory (checkpoints, logs, final model; or [run] output in --config)")
    parser.add_argument(
        "--init",
        default=None,
        help="RN50 (OpenAI CLIP, default), a local CLIP weight file, 'tiny', or a saved CSDN model",
    )
    parser.add_argument("--trial", type=int, default=None, help="RegDB split (1-10)")
    parser.add_argument(
        "--trials",
        default=None,
        nargs="+",
        metavar="T",
        help="regdb: train and evaluate each split (e.g. 1-10, 1,3,5-7 or 1 2 3) in OUTPUT/trial_<n>/, then write the "
        "averaged table (OUTPUT/trials.csv, trials.md) and print it; finished trials are skipped on a rerun",
    )
    parser.add_argument(
        "--device", default=None, help="auto (CUDA when available, else cpu; the default), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.add_argument("--stop-after", type=int, default=None, help="train at most N (>= 1) epochs in this call")
    parser.add_argument(
        "--save-every",
        type=int,
        default=None,
        metavar="N",
        help="also keep checkpoints/stage<S>_epoch_<N>.pt after every N-th epoch of each stage "
        "(loadable with csdn eval --model; or [run] save_every in --config; default 0: only last.pt)",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=None,
        metavar="K",
        help="with --save-every: keep the newest K snapshots, removing older ones (last.pt is always kept; "
        "or [run] keep; default: all)",
    )
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
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="experiment file (.toml: [data] dataset/root/trial, [model] init, [train] hyper-parameters, "
        "[run] output/device/save_every/keep; a run folder's experiment.toml repeats that run) or a .json of "
        "hyper-parameters; "
        "options override it",
    )
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


def _experiment_tables(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ``--config`` file's tables (a ``.json`` file is a bare ``[train]`` table)."""
    from csdn.train.experiment import TABLES, read_experiment

    empty: dict[str, dict[str, Any]] = {name: {} for name in (*TABLES, "train")}
    if not args.config:
        return empty
    if Path(args.config).suffix.lower() != ".json":
        return read_experiment(args.config)
    try:
        values = json.loads(Path(args.config).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise ValueError(f"--config {args.config} is not a JSON object of TrainConfig fields ({err})") from None
    return {**empty, "train": values}


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Data, init, output and device from the options, else the experiment file; the file's [train] table."""
    tables = _experiment_tables(args)
    file_values = {**tables["data"], **tables["model"], **tables["run"]}
    settings = {
        key: getattr(args, key) if getattr(args, key) is not None else file_values.get(key)
        for key in ("dataset", "root", "trial", "init", "output", "device", "save_every", "keep")
    }
    for key in ("dataset", "root", "output"):
        if settings[key] is None:
            raise ValueError(f"--{key} is required (or give {key} in the --config experiment file)")
    if settings["dataset"] not in DATASET_NAMES:
        raise ValueError(f"--config: dataset {settings['dataset']!r} is none of {', '.join(DATASET_NAMES)}")
    settings["init"] = settings["init"] or "RN50"
    settings["train"] = tables["train"]
    return settings


def config_from_args(args: argparse.Namespace, file_values: Mapping[str, Any] | None = None) -> TrainConfig | None:
    """The TrainConfig the options describe over ``file_values``; None when neither gives any field."""
    values: dict[str, Any] = dict(file_values if file_values is not None else _experiment_tables(args)["train"])
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
    if getattr(args, "trials", None) is not None:
        return _run_trials(args)
    from csdn.cli.embed import chosen_device
    from csdn.train import ddp as distributed
    from csdn.train.experiment import resolved_experiment, run_record, write_run_files
    from csdn.train.trainer import fit

    settings = resolve_settings(args)
    requested = settings["device"] or "auto"
    device = chosen_device(requested)  # before any process group or data: "cuda" on a CPU build says so now
    snapshots = {"save_every": settings["save_every"] or 0, "keep": settings["keep"]}
    if args.eval_every < 0:
        raise ValueError(f"--eval-every must be 0 (never) or a number of epochs, got {args.eval_every}")
    config = config_from_args(args, settings["train"])
    trial = settings["trial"]
    options = {"trial": trial} if trial is not None else {}
    protocol = {"trials": [trial]} if trial is not None else {}
    evaluate = _protocol_evaluator(settings["dataset"], settings["root"], protocol) if args.eval_every > 0 else None
    distributed.init_from_environment(device)  # resolved: "auto" on a GPU machine is "cuda" (NCCL) here
    output = Path(settings["output"])
    # written by fit() when a new run starts, after its checks: a refused run leaves no folder
    tables = resolved_experiment(
        settings["dataset"],
        settings["root"],
        trial,
        settings["init"],
        str(output),
        requested,
        config or TrainConfig(),
        snapshots,
    )
    record = run_record(settings["init"], device, getattr(args, "argv", []))
    try:
        fit(
            settings["dataset"],
            config,
            root=settings["root"],
            output_dir=output,
            init=settings["init"],
            evaluate=evaluate,
            eval_every=max(1, args.eval_every),
            device=device,  # "cuda" without an index: fit puts each torchrun rank on its own GPU
            device_requested=requested,
            resume=args.resume,
            num_workers=args.num_workers,
            progress=not args.no_progress,
            stop_after=args.stop_after,
            dataset_options=options,
            on_error="skip" if args.skip_bad_images else "raise",
            tensorboard=args.tensorboard,
            pixel_cache=not args.no_pixel_cache,
            on_start=lambda folder: write_run_files(folder, tables, record),
            **snapshots,
        )
    finally:
        distributed.shutdown()
    return 0


def _run_trials(args: argparse.Namespace) -> int:
    """``--trials``: :func:`csdn.train.trials.run_trials`, each trial an ordinary ``run_train`` of its own folder."""
    from csdn.train.trials import parse_trials, run_trials

    if args.trial is not None:
        raise ValueError("--trial and --trials exclude each other: --trials 2 trains trial 2 alone")
    settings = resolve_settings(args)

    def train_trial(trial: int, folder: Path, started: bool) -> None:
        run_train(
            argparse.Namespace(
                **{**vars(args), "trials": None, "trial": trial, "output": str(folder), "resume": started}
            )
        )

    from csdn.cli.embed import chosen_device

    device = chosen_device(settings["device"] or "auto")  # the trials' evaluations, as their training
    table = run_trials(
        settings["dataset"], settings["root"], parse_trials(",".join(args.trials)), settings["output"], train_trial,
        device=device, progress=not args.no_progress,
    )  # fmt: skip
    if table is not None:
        print(table)
    return 0
