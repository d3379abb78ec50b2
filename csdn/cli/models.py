"""``csdn models``, ``csdn info`` and ``csdn convert``: the registry, one model's architecture and
provenance, and the authors' checkpoint turned into a csdn model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from csdn.cli.embed import add_overwrite_option
from csdn.data.catalog import DATASET_NAMES


def run_models(args: argparse.Namespace) -> int:
    from csdn.hub.registry import open_registry

    registry = open_registry()
    rows = [("NAME", "DATASET", "WEIGHTS", "DESCRIPTION")]
    for name in registry.names():
        entry = registry.get(name)
        where = "bundled" if entry.bundled else f"hf-hub:{entry.repo_id}"
        rows.append((name, entry.dataset, where, entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return 0


def run_info(args: argparse.Namespace) -> int:
    from csdn.hub import loading as hub
    from csdn.hub.architectures import build_model
    from csdn.hub.registry import open_registry

    registry = open_registry()
    name = args.model
    registered = name in registry and not Path(name).exists()
    if registered:
        for key, value in registry.get(name).to_dict().items():
            print(f"{key}: {'-' if value is None else value}")
        try:
            config, provenance = hub.load_saved_config(name, revision=args.revision, local_files_only=True)
        except hub.WeightsNotAvailableError:
            print(f'weights: not in the local cache (csdn.load("{name}") downloads and verifies them)')
            return 0
    else:
        config, provenance = hub.load_saved_config(name, revision=args.revision)
    import torch

    with torch.device("meta"):  # sizes only: no memory, no initialisation
        num_parameters = sum(p.numel() for p in build_model(config).parameters())
    for line in hub.describe_architecture(config, num_parameters):
        print(line)
    for key, value in provenance.items():
        print(f"meta.{key}: {json.dumps(value)}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from csdn.hub.official import from_official
    from csdn.io.pretrained import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME
    from csdn.system.fileio import refuse_existing

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise FileExistsError(
            f"{out} exists and is not a folder; give a new or existing folder to write the model into"
        )
    if not args.overwrite:  # every file save_pretrained writes, not only the weights: README.md may be the user's
        refuse_existing([out / name for name in (WEIGHTS_NAME, CONFIG_NAME, MODEL_CARD_NAME)])
    model = from_official(args.checkpoint, image_size=tuple(args.image_size), dataset=args.dataset)
    model.save_pretrained(out)
    print(
        f"wrote {out}/ ({model.config.num_classes} identities, input {model.config.image_size[0]}x"
        f"{model.config.image_size[1]}); load it with csdn.load({str(out)!r}) or --model {out}"
    )
    return 0


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``models``, ``info`` and ``convert`` to an ``argparse`` sub-command collection."""
    models = commands.add_parser("models", help="list the registered pretrained models")
    models.set_defaults(func=run_models)

    info = commands.add_parser("info", help="show a model's registry entry and architecture")
    info.add_argument("model", help="registry name, hf-hub:org/repo, or a local folder / .safetensors file")
    info.add_argument("--revision", help="Hub branch, tag or commit")
    info.set_defaults(func=run_info)

    convert = commands.add_parser("convert", help="convert the authors' checkpoint (model_119.pth) to a csdn model")
    convert.add_argument("checkpoint", help="the authors' .pth checkpoint")
    convert.add_argument("output", help="folder to write model.safetensors, config.json and README.md into")
    convert.add_argument(
        "--dataset", choices=DATASET_NAMES, help="training set, recorded in the model card (e.g. sysu)"
    )
    convert.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(288, 144),
        metavar=("H", "W"),
        help="input size the checkpoint was trained at (default 288 144)",
    )
    add_overwrite_option(convert, "replace model.safetensors, config.json or README.md already in the output folder")
    convert.set_defaults(func=run_convert)
    return [models, info, convert]
