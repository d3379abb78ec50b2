"""``csdn match``: rank a gallery for each query (embeddings files, or image folders embedded on the
spot) into a CSV or JSON ranking, and optionally draw the first queries' matches."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csdn.cli.embed import (
    MODEL_HELP,
    add_embedding_options,
    add_overwrite_option,
    embed_files,
    load_model,
    say_device,
)
from csdn.errors import OutputExistsError

if TYPE_CHECKING:
    from csdn.retrieval.embeddings import Embeddings

RANKING_SUFFIXES = (".csv", ".json")


def _check_suffix(path: Path, suffixes: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{what} {path} must end in {' or '.join(suffixes)}")


def _side(path: str, modality: str, args: argparse.Namespace, cache: dict[str, Any]) -> Embeddings:
    """One side of ``csdn match``: an embeddings file, or images embedded now with ``--model``."""
    from csdn.retrieval.embeddings import EMBEDDINGS_SUFFIXES, is_embeddings_file, load_embeddings

    if is_embeddings_file(path):
        return load_embeddings(path)
    if args.model is None:
        raise ValueError(
            f"{path} is not an embeddings file ({', '.join(EMBEDDINGS_SUFFIXES)}); "
            "to embed its images now, pass --model"
        )
    if "model" not in cache:
        cache["model"] = load_model(args)
    return embed_files(cache["model"], [path], modality, args)


def _check_outputs(outputs: dict[str, Path], args: argparse.Namespace) -> None:
    """No output may be an input (an input file, its manifest, an image of an input folder), even with
    --overwrite; none may exist without it, and each must be writable: all checked before any work."""
    from csdn.images.files import images_in
    from csdn.retrieval.embeddings import is_embeddings_file, legacy_manifest_path, manifest_path
    from csdn.retrieval.visualize import refuse_drawn_image
    from csdn.system.fileio import check_writable, refuse_existing

    inputs: dict[Path, str] = {}
    for name in (args.query, args.gallery):
        path = Path(name)
        inputs[path.resolve()] = name
        if is_embeddings_file(path):
            for manifest in (manifest_path(path), legacy_manifest_path(path)):
                inputs.setdefault(manifest.resolve(), f"the manifest of {name}")
    for flag, path in outputs.items():
        clash = inputs.get(path.resolve())
        if clash is not None:
            raise OutputExistsError(
                f"{flag} {path} is {clash}, an input of this run; write the output "
                "under another name (--overwrite never replaces an input)"
            )
    if "--visualize" in outputs:
        for name in (args.query, args.gallery):
            if Path(name).is_dir():
                refuse_drawn_image(outputs["--visualize"], images_in(Path(name)))
    if len(set(p.resolve() for p in outputs.values())) < len(outputs):
        raise ValueError(f"--output and --visualize name the same file {outputs['--output']}; give two names")
    if not args.overwrite:
        refuse_existing(outputs.values())
    check_writable(outputs.values())


def run_match(args: argparse.Namespace) -> int:
    from csdn.cli.sharded import torchrun_world
    from csdn.retrieval.embeddings import check_same_model
    from csdn.retrieval.sharded import match_on_ranks
    from csdn.retrieval.visualize import check_sheet_size, refuse_drawn_image
    from csdn.system.fileio import atomic_write_all

    output = Path(args.output)
    _check_suffix(output, RANKING_SUFFIXES, "--output")
    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1, got {args.topk}")
    outputs = {"--output": output}
    if args.visualize:
        _check_suffix(Path(args.visualize), (".png",), "--visualize")
        if args.visualize_queries < 1:
            raise ValueError(f"--visualize-queries must be at least 1, got {args.visualize_queries}")
        check_sheet_size(args.visualize_queries, args.topk)  # the most it can draw, known before any work
        outputs["--visualize"] = Path(args.visualize)
    _check_outputs(outputs, args)
    cache: dict[str, Any] = {}
    query = _side(args.query, args.query_modality, args, cache)
    gallery = _side(args.gallery, args.gallery_modality, args, cache)
    if query.dim != gallery.dim:
        raise ValueError(
            f"query embeddings are {query.dim}-d but gallery embeddings {gallery.dim}-d: embed both "
            "with the same model and the same --no-flip setting"
        )
    if args.visualize:  # the images a manifest lists are inputs too; all must exist to be drawn
        refuse_drawn_image(args.visualize, [*query.paths, *gallery.paths])
        _check_images(query.paths[: args.visualize_queries], "query")
        _check_images(gallery.paths, "gallery")
        if args.ids_from_folders:
            _folder_ids(query.paths[: args.visualize_queries] + gallery.paths)
    check_same_model(query.model, gallery.model)
    with torchrun_world(None) as world:  # under torchrun: each rank ranks a slice of the gallery
        result = match_on_ranks(
            query.vectors,
            gallery.vectors,
            topk=args.topk,
            progress=not args.quiet,
            world=world,
            names=(f"query embeddings ({args.query})", f"gallery embeddings ({args.gallery})"),
        )
    if "model" in cache:  # images were embedded here
        say_device(args.device)
    if result is None:
        return 0
    rows = [
        (query.paths[q], rank, gallery.paths[int(index)], float(score))
        for q, (indices, scores) in enumerate(result)
        for rank, (index, score) in enumerate(zip(indices.tolist(), scores.tolist(), strict=True), start=1)
    ]
    # the ranking in the bytes of the file names themselves (surrogateescape: names that are not UTF-8)
    ranking = _ranking_text(output, rows, args.topk)
    writes = {output: lambda temp: temp.write_text(ranking, encoding="utf-8", errors="surrogateescape")}
    if args.visualize:  # drawn before anything is written: a failed picture leaves no ranking behind
        sheet = _visualize(query.paths, gallery.paths, result, args)
        writes[Path(args.visualize)] = lambda temp: sheet.save(temp, format="PNG")
    for path in writes:
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_all(writes)
    print(f"wrote {output}: top {result.indices.shape[1]} of {gallery.count} gallery items for {query.count} queries")
    if args.visualize:
        count = min(args.visualize_queries, query.count)
        colours = (
            "green: same folder identity, red: another" if args.ids_from_folders else "grey borders: identities unknown"
        )
        print(
            f"wrote {args.visualize}: the first {count} queries and their top {result.indices.shape[1]} matches ({colours})"
        )
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


def _folder_ids(paths: list[str]) -> list[int]:
    """The identity each image's parent folder names (``.../0007/x.jpg`` -> 7), as in SYSU-MM01 and LLCM.

    A folder whose name is not a number names no identity: refused, rather than coloured by guesswork.
    """
    names = [Path(p).parent.name for p in paths]
    bad = [p for p, name in zip(paths, names, strict=True) if not (name.isascii() and name.isdigit())]
    if bad:
        raise ValueError(
            f"--ids-from-folders reads identities from numbered folders (.../0007/x.jpg -> 7), but {len(bad)} "
            f"images are in folders without a number (first: {bad[0]!r}); drop --ids-from-folders"
        )
    return [int(name) for name in names]


def _visualize(query_paths: list[str], gallery_paths: list[str], result: Any, args: argparse.Namespace):
    """The picture of the first ``--visualize-queries`` queries with their ranked gallery images."""
    from csdn.retrieval.visualize import draw_ranking

    queries = query_paths[: args.visualize_queries]
    query_ids = _folder_ids(queries) if args.ids_from_folders else None
    gallery_ids = _folder_ids(gallery_paths) if args.ids_from_folders else None
    return draw_ranking(
        queries,
        gallery_paths,
        result.indices[: len(queries)],
        scores=result.scores[: len(queries)],
        topk=args.topk,
        query_ids=query_ids,
        gallery_ids=gallery_ids,
    )


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


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``match`` to an ``argparse`` sub-command collection."""
    match = commands.add_parser("match", help="rank a gallery for each query (embeddings files or image folders)")
    match.add_argument("query", help="embeddings file from `csdn embed`, or a folder of query images")
    match.add_argument("gallery", help="embeddings file from `csdn embed`, or a folder of gallery images")
    match.add_argument("--model", help=f"model to embed image folders with: {MODEL_HELP}")
    match.add_argument("--query-modality", default="infrared", help="modality of query images (default infrared)")
    match.add_argument("--gallery-modality", default="visible", help="modality of gallery images (default visible)")
    match.add_argument("--topk", type=int, default=10, help="matches per query (default 10)")
    match.add_argument("--output", required=True, help="ranked list: NAME.csv or NAME.json")
    match.add_argument(
        "--visualize",
        metavar="PNG",
        help="also draw the first queries beside their top-k gallery images into this PNG "
        "(needs the images: folders, or embeddings files whose manifest lists their paths)",
    )
    match.add_argument(
        "--visualize-queries",
        type=int,
        default=10,
        metavar="N",
        help="queries (rows) in the --visualize picture (default 10)",
    )
    match.add_argument(
        "--ids-from-folders",
        action="store_true",
        help="--visualize: read identities from each image's parent folder (.../0007/x.jpg -> 7) "
        "and draw correct matches green, wrong ones red (default: grey, identities unknown)",
    )
    add_overwrite_option(match, "replace an existing --output / --visualize file (never an input)")
    add_embedding_options(match)
    match.set_defaults(func=run_match)
    return [match]
