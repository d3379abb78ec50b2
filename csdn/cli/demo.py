"""``csdn demo`` (also ``python -m csdn.demo``): see the package work in seconds, offline, from a plain
``pip install``.

The bundled demo model (``synthetic-tiny``, no download) meets people it has never seen, drawn
by the package's synthetic generator in a temporary folder: their infrared images are the
queries, their visible images the gallery. All queries are scored (rank-1, mAP); a sample of
them, evenly spaced by the rank of their true match (so the sample's rank-1 is the total's),
is printed and drawn into one picture. The only file written is that picture, at
``--output`` (default ``./csdn_demo_ranking.png``); an existing file is kept unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csdn.cli.embed import add_overwrite_option

DEFAULT_PICTURE = Path("csdn_demo_ranking.png")
# Held-out people: the bundled model was trained on seed 0 and checked on seed 1.
PEOPLE: dict[str, Any] = dict(num_train_ids=2, num_test_ids=12, images_per_camera=3, seed=2)


def register(commands) -> list[argparse.ArgumentParser]:
    """Add ``demo`` to an ``argparse`` sub-command collection."""
    from csdn.hub.registry import DEFAULT_MODEL

    parser = commands.add_parser(
        "demo",
        help="rank unseen synthetic people with the bundled model and draw the result (offline, seconds)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_PICTURE,
        help=f"ranked-results picture to write, .png (default: ./{DEFAULT_PICTURE})",
    )
    add_overwrite_option(parser, "replace an existing --output picture")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model to load: a registry name, folder or hf-hub:org/repo (default: the bundled {DEFAULT_MODEL!r})",
    )
    parser.add_argument(
        "--show",
        type=int,
        default=6,
        help="queries to print and draw, evenly spaced by the rank of their true match (default 6)",
    )
    parser.add_argument("--topk", type=int, default=5, help="matches per query to print and draw (default 5)")
    parser.set_defaults(func=run_demo)
    return [parser]


def _check(args: argparse.Namespace) -> None:
    """Everything about the arguments that can be wrong, before any work."""
    from csdn.system.fileio import refuse_existing

    if args.output.suffix.lower() != ".png":
        raise ValueError(f"--output {args.output} must end in .png (the picture is written as PNG)")
    for flag in ("show", "topk"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if not args.overwrite:
        refuse_existing([args.output])


def representative(true_ranks: Sequence[int], count: int) -> list[int]:
    """``count`` query positions evenly spaced through the queries sorted by the rank of their true match,
    in query order: the sample's share of rank-1 hits is the whole set's, to within one query."""
    order = sorted(range(len(true_ranks)), key=lambda q: (true_ranks[q] or len(true_ranks) + 1, q))
    count = min(count, len(order))
    return sorted(order[(2 * i + 1) * len(order) // (2 * count)] for i in range(count))


def run_demo(args: argparse.Namespace) -> int:
    """Handler for ``csdn demo``; returns the process exit code."""
    from csdn.data import SYSUMM01
    from csdn.data.synthetic import write_sysu
    from csdn.evaluation import eval_sysu
    from csdn.hub.loading import load
    from csdn.retrieval import match
    from csdn.retrieval.visualize import draw_ranking, true_match_ranks

    _check(args)
    model = load(args.model, progress=False)
    with tempfile.TemporaryDirectory(prefix="csdn-demo-") as folder:
        # a SYSU-MM01-style tree whose test identities are the unseen people
        write_sysu(Path(folder) / "people", **PEOPLE)
        people = SYSUMM01(Path(folder) / "people")
        query = people.query("all")  # every infrared image (cameras 3, 6)
        gallery = people.gallery("all", trial=0, shots=1)  # one visible image per person and camera
        print(
            f"{len(query)} infrared queries, {len(gallery)} visible gallery images, "
            f"{len(people.test_ids)} people the model never saw"
        )

        query_embeddings = model.embed_image([s.path for s in query], modality="infrared")
        gallery_embeddings = model.embed_image([s.path for s in gallery], modality="visible")
        ranked = match(query_embeddings, gallery_embeddings, topk=args.topk)

        similarity = (query_embeddings @ gallery_embeddings.T).numpy()
        ranks = true_match_ranks(similarity, [s.pid for s in query], [s.pid for s in gallery])
        shown = representative(ranks, args.show)
        first = sum(rank == 1 for rank in ranks)
        print(
            f"showing {len(shown)} of the {len(query)} queries, evenly spaced by the rank of their true match, "
            f"so that they are typical: {sum(ranks[q] == 1 for q in shown)} of them are right at rank 1, as are "
            f"{first} of all {len(query)} ({100 * first / len(query):.1f}%) in this ranking"
        )
        for q in shown:
            where = f"true match at rank {ranks[q]}" if ranks[q] else "no true match in the gallery"
            print(f"\nquery {Path(query[q].path).relative_to(people.root)} (person {query[q].pid}, {where}):")
            for rank, (g, score) in enumerate(zip(ranked.indices[q].tolist(), ranked.scores[q].tolist()), start=1):
                mark = "correct" if gallery[g].pid == query[q].pid else "wrong"
                print(f"  {rank}. {Path(gallery[g].path).relative_to(people.root)}  cosine {score:.3f}  {mark}")

        cmc, mean_ap, _ = eval_sysu(
            -similarity,
            [s.pid for s in query],
            [s.pid for s in gallery],
            [s.camid for s in query],
            [s.camid for s in gallery],
        )
        print(
            f"\nall {len(query)} queries (SYSU-MM01 all-search protocol, one gallery draw): "
            f"rank-1 {100 * cmc[0]:.1f}%, mAP {100 * mean_ap:.1f}% (the protocol ignores camera-2 gallery images "
            f"for camera-3 queries; the plain ranking above has {100 * first / len(query):.1f}% at rank 1)"
        )

        draw_ranking(
            [query[q].path for q in shown],
            [s.path for s in gallery],
            ranked.indices[shown],
            scores=ranked.scores[shown],
            query_ids=[query[q].pid for q in shown],
            gallery_ids=[s.pid for s in gallery],
            query_cameras=[query[q].camid for q in shown],
            true_ranks=[ranks[q] for q in shown],
            topk=args.topk,
            output=args.output,
        )
    print(f"wrote the ranked results to {args.output.resolve()} (green: same person, red: someone else)")
    return 0
