"""``csdn publish``: release a model for ``sysu``/``regdb``/``llcm`` in one command.

Converts the authors' checkpoint (when given a ``.pth``; any other model csdn.load reads is taken
as it is), evaluates it on the dataset's standard protocol, writes the folder with a model card
whose ``model-index`` holds the results, and uploads it to a Hub repository. ``--dry-run``
writes the folder only. The end prints the registry entry that pins the upload.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from csdn.cli.embed import add_overwrite_option

# the standard protocol of each dataset: one csdn.evaluate call per settings dict
PROTOCOLS: dict[str, list[dict[str, Any]]] = {
    "sysu": [{"mode": "all", "shots": 1}, {"mode": "indoor", "shots": 1}],  # infrared->visible, 10 trials
    "regdb": [{}],  # both directions, on the split the model was trained on (--trial)
    "llcm": [{"shots": 1}],  # both directions, 10 trials
}
NONSTANDARD_KEY = "evaluation_note"  # model.provenance: why the card's numbers are not the benchmark's


def license_id(text: str) -> str:
    """An SPDX-style licence id (``apache-2.0``, ``cc-by-nc-4.0``, ``other``): the Hub's card field takes no more."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a licence id: give an SPDX id such as apache-2.0 or mit, or 'other'"
        )
    return text


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``publish`` to an ``argparse`` sub-command collection."""
    parser = commands.add_parser(
        "publish",
        help="convert, evaluate, write the model card with the metrics, and push to the Hub",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("model", help="the authors' checkpoint (.pth), or a folder / .safetensors / registry name")
    parser.add_argument("repo_id", help="Hub repository to push to, org/name")
    parser.add_argument(
        "--dataset",
        choices=sorted(PROTOCOLS),
        required=True,
        help="the dataset the model was trained on; it is evaluated on its test set",
    )
    parser.add_argument("--root", required=True, help="the dataset's folder (as for csdn eval)")
    parser.add_argument("--trial", type=int, default=1, help="regdb: the split the model was trained on (default 1)")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(288, 144),
        metavar=("H", "W"),
        help="a .pth checkpoint's input size (default 288 144)",
    )
    parser.add_argument(
        "--license",
        default=None,
        type=license_id,
        help="license of the weights, an SPDX id or 'other' (default: the model's recorded one, else 'other')",
    )
    parser.add_argument("--dry-run", action="store_true", help="write the folder (--output) only; push nothing")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder to write the release into (default: ./<repo name> with --dry-run, else a temporary folder)",
    )
    add_overwrite_option(parser, "replace model files already in --output")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--cache-dir", default=None, help="keep embeddings here between runs (as for csdn eval)")
    parser.add_argument(
        "--allow-nonstandard",
        action="store_true",
        help="publish even when the test set's query and gallery counts differ from the published protocol's "
        "(a partial or synthetic copy; the card then says the evaluation is non-standard)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_publish)
    return [parser]


def _load(args: argparse.Namespace):
    """The model to release: the authors' checkpoint converted, or any model csdn.load reads."""
    from csdn.hub.loading import load
    from csdn.hub.official import from_official
    from csdn.system.torchfile import has_torch_file_suffix

    if has_torch_file_suffix(args.model):
        return from_official(args.model, image_size=tuple(args.image_size), dataset=args.dataset)
    return load(args.model, progress=not args.quiet)


def card_provenance(model, dataset: str, license_name: str | None) -> dict[str, Any]:
    """What the card needs beyond the metrics: dataset, license and the base model, the CLIP weights the
    model's architecture starts from (its preset's ``clip``: RN50 for ``csdn_rn50``) as the registry names them."""
    from csdn.config import read_preset
    from csdn.hub.registry import open_registry
    from csdn.io.card import dataset_title

    meta: dict[str, Any] = {"dataset": dataset_title(dataset)}
    meta["license"] = license_name or model.provenance.get("license", "other")
    clip_name = read_preset(model.config.architecture).get("clip")
    if "base_model" not in model.provenance and clip_name:
        clip = open_registry().clip_entries.get(clip_name)
        if clip is not None:
            meta["base_model"] = clip.repo_id  # CSDN fine-tunes OpenAI's CLIP RN50
    return meta


def _evaluate(model, args: argparse.Namespace) -> list:
    from csdn.evaluation.protocol import evaluate

    trials = [args.trial] if args.dataset == "regdb" else None
    return [
        evaluate(
            model,
            args.dataset,
            root=args.root,
            trials=trials,
            progress=not args.quiet,
            cache_dir=args.cache_dir,
            **settings,
        )
        for settings in PROTOCOLS[args.dataset]
    ]


def _check(args: argparse.Namespace) -> Path | None:
    """Arguments that can be wrong, before the evaluation (which may take an hour); returns the output folder."""
    from csdn.hub.registry import REPO_ID
    from csdn.io.pretrained import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME
    from csdn.system.fileio import refuse_existing

    if not REPO_ID.fullmatch(args.repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {args.repo_id!r}")
    if not Path(args.root).is_dir():
        raise FileNotFoundError(f"--root {args.root} is not a folder; give the {args.dataset} dataset's folder")
    if args.trial != 1 and args.dataset != "regdb":
        raise ValueError(f"--trial applies to --dataset regdb only, not {args.dataset}")
    output = args.output or (Path(args.repo_id.split("/")[-1]) if args.dry_run else None)
    if output is not None:
        if output.exists() and not output.is_dir():
            raise FileExistsError(f"--output {output} exists and is not a folder")
        if not args.overwrite:
            refuse_existing([output / name for name in (WEIGHTS_NAME, CONFIG_NAME, MODEL_CARD_NAME)])
    return output


def run_publish(args: argparse.Namespace) -> int:
    """Handler for ``csdn publish``; returns the process exit code."""
    from csdn.hub.loading import upload_folder
    from csdn.io.card import evaluation_records, evaluation_table, protocol_label
    from csdn.io.pretrained import WEIGHTS_NAME, save_pretrained
    from csdn.system.fileio import sha256_file

    output = _check(args)
    model = _load(args)
    results = _evaluate(model, args)
    print("\n".join(evaluation_table(evaluation_records(results))))
    extra_meta = card_provenance(model, args.dataset, args.license)
    nonstandard = [f"{r.dataset} {protocol_label(r.settings)} {p}" for r in results for p in r.nonstandard()]
    if nonstandard and not args.allow_nonstandard:
        raise ValueError(
            f"--root {args.root} is not the standard {args.dataset} test set: {'; '.join(nonstandard)}; its scores "
            "cannot be compared with published ones. Point --root at the full dataset, or pass --allow-nonstandard "
            "to publish anyway (the card then says the evaluation is non-standard)"
        )
    if nonstandard:
        extra_meta[NONSTANDARD_KEY] = "non-standard test set: " + "; ".join(nonstandard)
    release = dict(repo_id=args.repo_id, evaluation=results, extra_meta=extra_meta)
    if args.dry_run:
        assert output is not None  # _check names one for a dry run
        save_pretrained(model, output, **release)
        print(
            f"dry run: wrote {output}/ (model.safetensors, config.json, README.md with the model-index); "
            "nothing was pushed. Push it with the same command without --dry-run"
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="csdn-publish-") as temporary:
        folder = save_pretrained(model, output or temporary, **release)
        commit = upload_folder(
            folder,
            args.repo_id,
            private=args.private,
            token=args.token,
            commit_message=f"Release: CSDN evaluated on {args.dataset}",
        )
        entry = {
            "repo_id": args.repo_id,
            "filename": WEIGHTS_NAME,
            "revision": commit.oid,
            "sha256": sha256_file(folder / WEIGHTS_NAME),
        }
    print(f"pushed to {args.repo_id}: {commit}")
    print("to pin this release in weights/registry.json, use:\n" + json.dumps(entry, indent=2))
    return 0
