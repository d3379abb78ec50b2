"""The ``csdn`` command line: ``models``, ``info``, ``convert``, ``embed`` and ``match``, plus the
sub-commands other modules add (``eval``, ``synth``, ``train``).

Embeddings files (written by ``csdn embed``, read by ``csdn match``) are
``NAME.safetensors`` (one float32 tensor ``embeddings`` ``[N, D]``) or ``NAME.npy``
(the same array), with a manifest ``NAME.json`` beside it::

    {"format": "csdn-embeddings", "version": 1, "model": "sysu", "modality": "infrared",
     "flip": true, "precision": "fp32", "count": N, "dim": D, "paths": ["cam3/0001.jpg", ...]}

Row ``i`` of the array is the embedding of ``paths[i]``; rows have unit L2 norm.

Errors the library reports (bad input, missing files, unavailable weights) print
``csdn: error: <message>`` and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from csdn.clip_backbone import CLIPWeightsError

EMBEDDINGS_FORMAT = "csdn-embeddings"
EMBEDDINGS_VERSION = 1
EMBEDDINGS_SUFFIXES = (".safetensors", ".npy")
RANKING_SUFFIXES = (".csv", ".json")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

# Sub-commands defined in other modules: (module, function). The function receives the
# sub-parser collection and registers one command with ``set_defaults(func=handler)``,
# ``handler(args) -> exit code``. A module that is not installed is left out.
PLUGINS = (
    ("csdn.cli_eval", "add_eval_parser"),
    ("csdn.cli_synth", "add_synth_parser"),
    ("csdn.train.cli", "add_train_parser"),
)

# What a user can fix from the message alone; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, CLIPWeightsError)


def _out(line: str = "") -> None:
    print(line, file=sys.stdout)


def _note(line: str) -> None:
    print(line, file=sys.stderr)


# ---------------------------------------------------------------------------- models / info
def run_models(args: argparse.Namespace) -> int:
    from csdn.registry import open_registry

    registry = open_registry()
    rows = [("NAME", "DATASET", "WEIGHTS", "DESCRIPTION")]
    for name in registry.names():
        entry = registry.get(name)
        where = "bundled" if entry.bundled else f"hf-hub:{entry.repo_id}"
        rows.append((name, entry.dataset, where, entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return 0


def run_info(args: argparse.Namespace) -> int:
    from csdn import hub
    from csdn.model import CSDN
    from csdn.registry import open_registry

    registry = open_registry()
    name = args.model
    registered = name in registry.entries and not Path(name).exists()
    if registered:
        for key, value in registry.get(name).to_dict().items():
            _out(f"{key}: {'-' if value is None else value}")
        try:
            config = hub.load_config(name, revision=args.revision, local_files_only=True)
        except hub.WeightsNotAvailableError:
            _out(f'weights: not in the local cache (csdn.load("{name}") downloads and verifies them)')
            return 0
    else:
        config = hub.load_config(name, revision=args.revision)
    with torch.device("meta"):  # sizes only: no memory, no initialisation
        num_parameters = sum(p.numel() for p in CSDN(config).parameters())
    for line in hub.describe_architecture(config, num_parameters):
        _out(line)
    for key, value in config.meta.items():
        _out(f"meta.{key}: {json.dumps(value)}")
    return 0


# ---------------------------------------------------------------------------- convert
def run_convert(args: argparse.Namespace) -> int:
    from csdn.convert import from_official
    from csdn.hub import WEIGHTS_NAME

    out = Path(args.output)
    if (out / WEIGHTS_NAME).exists() and not args.overwrite:
        raise FileExistsError(f"{out / WEIGHTS_NAME} already exists; pass --overwrite to replace it")
    model = from_official(args.checkpoint, image_size=tuple(args.image_size), dataset=args.dataset)
    model.save_pretrained(out)
    _out(f"wrote {out}/ ({model.config.num_classes} identities, input {model.config.image_size[0]}x"
         f"{model.config.image_size[1]}); load it with csdn.load({str(out)!r}) or --model {out}")
    return 0


# ---------------------------------------------------------------------------- embeddings files
def image_paths(inputs: Sequence[str]) -> list[Path]:
    """Image files in the order given; a folder contributes its images (recursively, sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
    return paths


def manifest_path(embeddings: Path) -> Path:
    return embeddings.with_suffix(".json")


def _check_suffix(path: Path, suffixes: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {path} must end in {' or '.join(suffixes)}")


def save_embeddings(path: Path, embeddings: torch.Tensor, manifest: dict[str, Any]) -> None:
    """Write the embeddings file and its manifest, each atomically."""
    from csdn.fileio import atomic_write, atomic_write_text
    from csdn.hub import write_safetensors

    _check_suffix(path, EMBEDDINGS_SUFFIXES, "embeddings file")
    array = embeddings.detach().cpu().float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        atomic_write(path, lambda temp: _write_npy(temp, array.numpy()))
    else:
        atomic_write(path, lambda temp: write_safetensors(temp, {"embeddings": array}, {"format": "pt"}))
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write_text(manifest_path(path), text)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: np.save would append ".npy" to a temporary name
        np.save(handle, array)


def load_embeddings(path: Path) -> tuple[Any, dict[str, Any]]:
    """``(array [N, D], manifest)``; without a manifest beside it, rows are labelled by index."""
    _check_suffix(path, EMBEDDINGS_SUFFIXES, "embeddings file")
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    if path.suffix.lower() == ".npy":
        array: Any = np.load(path, mmap_mode="r")  # matching streams it; a gallery may exceed memory
    else:
        from csdn.hub import read_safetensors_header
        from safetensors.torch import load_file

        _, tensors = read_safetensors_header(path)
        if list(tensors) != ["embeddings"]:
            raise ValueError(f"{path} holds {sorted(tensors)}, not one 'embeddings' tensor written by `csdn embed`")
        array = load_file(str(path))["embeddings"]
    if array.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {list(array.shape)}; embeddings are [N, D]")
    manifest_file = manifest_path(path)
    if manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        if manifest.get("format") != EMBEDDINGS_FORMAT or len(manifest.get("paths", ())) != array.shape[0]:
            raise ValueError(
                f"{manifest_file} does not describe {path} ({array.shape[0]} rows); re-run `csdn embed`"
            )
    else:
        manifest = {"paths": [str(i) for i in range(array.shape[0])]}
    return array, manifest


# ---------------------------------------------------------------------------- embed / match
def _embed(model: Any, model_name: str, inputs: Sequence[str], modality: str, args: argparse.Namespace):
    from csdn.modality import normalize_modality

    modality = normalize_modality(modality)
    paths = image_paths(inputs)
    embeddings = model.embed_image(
        [str(p) for p in paths], modality, batch_size=args.batch_size, flip=not args.no_flip,
        precision=args.precision, progress=not args.quiet,
    )
    manifest = {
        "format": EMBEDDINGS_FORMAT, "version": EMBEDDINGS_VERSION, "model": model_name, "modality": modality,
        "flip": not args.no_flip, "precision": args.precision, "count": len(paths),
        "dim": embeddings.shape[1], "paths": [str(p) for p in paths],
    }
    return embeddings, manifest


def _load_model(name: str, device: str, quiet: bool):
    from csdn.hub import load

    return load(name, device=device, progress=not quiet)


def run_embed(args: argparse.Namespace) -> int:
    output = Path(args.output)
    _check_suffix(output, EMBEDDINGS_SUFFIXES, "--output")
    model = _load_model(args.model, args.device, args.quiet)
    embeddings, manifest = _embed(model, args.model, args.images, args.modality, args)
    save_embeddings(output, embeddings, manifest)
    _out(f"wrote {output} ({embeddings.shape[0]} x {embeddings.shape[1]}) and {manifest_path(output)}")
    return 0


def _side(path: str, modality: str, args: argparse.Namespace, cache: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """One side of ``csdn match``: an embeddings file, or images embedded now with ``--model``."""
    if Path(path).suffix.lower() in EMBEDDINGS_SUFFIXES:
        return load_embeddings(Path(path))
    if args.model is None:
        raise ValueError(f"{path} is not an embeddings file ({', '.join(EMBEDDINGS_SUFFIXES)}); "
                         "to embed its images now, pass --model")
    if "model" not in cache:
        cache["model"] = _load_model(args.model, args.device, args.quiet)
    return _embed(cache["model"], args.model, [path], modality, args)


def run_match(args: argparse.Namespace) -> int:
    from csdn.fileio import atomic_write_text
    from csdn.matching import match

    output = Path(args.output)
    _check_suffix(output, RANKING_SUFFIXES, "--output")
    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    if args.visualize:
        _check_suffix(Path(args.visualize), (".png",), "--visualize")
        if args.visualize_queries < 1:
            raise ValueError(f"--visualize-queries must be at least 1, got {args.visualize_queries}")
    cache: dict[str, Any] = {}
    query, query_info = _side(args.query, args.query_modality, args, cache)
    gallery, gallery_info = _side(args.gallery, args.gallery_modality, args, cache)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query embeddings are {query.shape[1]}-d but gallery embeddings {gallery.shape[1]}-d: embed both "
            "with the same model and the same --no-flip setting"
        )
    models = {info.get("model") for info in (query_info, gallery_info)} - {None}
    if len(models) > 1:
        _note(f"csdn: warning: query and gallery were embedded with different models ({', '.join(sorted(models))})")
    result = match(query, gallery, topk=args.topk, progress=not args.quiet)
    rows = [
        (query_info["paths"][q], rank, gallery_info["paths"][int(index)], float(score))
        for q, (indices, scores) in enumerate(result)
        for rank, (index, score) in enumerate(zip(indices.tolist(), scores.tolist()), start=1)
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, _ranking_text(output, rows, args.topk))
    _out(f"wrote {output}: top {result.indices.shape[1]} of {gallery.shape[0]} gallery items "
         f"for {query.shape[0]} queries")
    if args.visualize:
        _visualize(Path(args.visualize), query_info["paths"], gallery_info["paths"], result, args)
    return 0


def _check_images(paths: list[str], side: str) -> None:
    """``--visualize`` draws the images themselves: each row must name an image file that still exists."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--visualize draws the {side} images, but {len(missing)} of its {len(paths)} entries are not image "
            f"files here (first: {missing[0]!r}); give an image folder, or an embeddings file whose .json "
            "manifest lists paths valid from this folder (run `csdn embed` from the same place)"
        )


def _folder_id(path: str) -> int | str:
    """The identity an image's parent folder names (``.../0007/x.jpg`` -> 7), as in SYSU-MM01 and LLCM."""
    name = Path(path).parent.name
    return int(name) if name.isdigit() else name


def _visualize(picture: Path, query_paths: list[str], gallery_paths: list[str], result: Any,
               args: argparse.Namespace) -> None:
    """Draw the first ``--visualize-queries`` queries with their ranked gallery images."""
    from csdn.visualize import draw_ranking

    count = min(args.visualize_queries, len(query_paths))
    queries = query_paths[:count]
    _check_images(queries, "query")
    _check_images(gallery_paths, "gallery")
    ids = {}
    if args.ids_from_folders:
        ids = {"query_ids": [_folder_id(p) for p in queries], "gallery_ids": [_folder_id(p) for p in gallery_paths]}
    draw_ranking(queries, gallery_paths, result.indices[:count], scores=result.scores[:count], topk=args.topk,
                 output=picture, **ids)
    colours = "green: same folder identity, red: another" if ids else "grey borders: identities unknown"
    _out(f"wrote {picture}: the first {count} queries and their top {result.indices.shape[1]} matches ({colours})")


def _ranking_text(output: Path, rows: list[tuple[str, int, str, float]], topk: int) -> str:
    """CSV ``query,rank,gallery,score`` (rank from 1, best first) or the same as JSON grouped by query."""
    if output.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("query", "rank", "gallery", "score"))
        writer.writerows((q, rank, g, f"{score:.6f}") for q, rank, g, score in rows)
        return buffer.getvalue()
    grouped: dict[str, list[dict[str, Any]]] = {}
    for query, rank, gallery, score in rows:
        grouped.setdefault(query, []).append({"rank": rank, "gallery": gallery, "score": score})
    results = [{"query": query, "matches": matches} for query, matches in grouped.items()]
    return json.dumps({"topk": topk, "results": results}, indent=1) + "\n"


# ---------------------------------------------------------------------------- parser
def _embedding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation (half-size embeddings)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="compute precision (default fp32)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csdn", description="CSDN models for visible-infrared person re-identification."
    )
    from csdn import __version__

    parser.add_argument("--version", action="version", version=f"csdn-reid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    models = commands.add_parser("models", help="list the registered pretrained models")
    models.set_defaults(func=run_models)

    info = commands.add_parser("info", help="show a model's registry entry and architecture")
    info.add_argument("model", help="registry name, hf-hub:org/repo, or a local folder / .safetensors file")
    info.add_argument("--revision", help="Hub branch, tag or commit")
    info.set_defaults(func=run_info)

    convert = commands.add_parser("convert", help="convert the authors' checkpoint (model_119.pth) to a csdn model")
    convert.add_argument("checkpoint", help="the authors' .pth checkpoint")
    convert.add_argument("output", help="folder to write model.safetensors, config.json and README.md into")
    convert.add_argument("--dataset", help="training set, recorded in the model card (e.g. sysu)")
    convert.add_argument("--image-size", type=int, nargs=2, default=(288, 144), metavar=("H", "W"),
                         help="input size the checkpoint was trained at (default 288 144)")
    convert.add_argument("--overwrite", action="store_true", help="replace a model already in the output folder")
    convert.set_defaults(func=run_convert)

    embed = commands.add_parser("embed", help="embed images into an embeddings file (+ a .json manifest)")
    embed.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    embed.add_argument("--model", required=True, help="registry name, hf-hub:org/repo, or a local model")
    embed.add_argument("--modality", required=True, help="visible (rgb, vis) or infrared (ir, thermal, nir)")
    embed.add_argument("--output", required=True, help="embeddings file: NAME.safetensors or NAME.npy")
    _embedding_options(embed)
    embed.set_defaults(func=run_embed)

    match = commands.add_parser("match", help="rank a gallery for each query (embeddings files or image folders)")
    match.add_argument("query", help="embeddings file from `csdn embed`, or a folder of query images")
    match.add_argument("gallery", help="embeddings file from `csdn embed`, or a folder of gallery images")
    match.add_argument("--model", help="model to embed image folders with")
    match.add_argument("--query-modality", default="infrared", help="modality of query images (default infrared)")
    match.add_argument("--gallery-modality", default="visible", help="modality of gallery images (default visible)")
    match.add_argument("--topk", type=int, default=10, help="matches per query (default 10)")
    match.add_argument("--output", required=True, help="ranked list: NAME.csv or NAME.json")
    match.add_argument("--visualize", metavar="PNG",
                       help="also draw the first queries beside their top-k gallery images into this PNG "
                            "(needs the images: folders, or embeddings files whose manifest lists their paths)")
    match.add_argument("--visualize-queries", type=int, default=10, metavar="N",
                       help="queries (rows) in the --visualize picture (default 10)")
    match.add_argument("--ids-from-folders", action="store_true",
                       help="--visualize: read identities from each image's parent folder (.../0007/x.jpg -> 7) "
                            "and draw correct matches green, wrong ones red (default: grey, identities unknown)")
    _embedding_options(match)
    match.set_defaults(func=run_match)

    for module_name, function in PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
                continue  # that part of csdn-reid is not installed
            raise
        getattr(module, function)(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _note("csdn: interrupted")
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise
        _note(f"csdn: error: {err}")
        return 2
