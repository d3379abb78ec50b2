"""Quickstart: find the visible-camera photos of people seen by an infrared camera, offline.

    python examples/quickstart.py                       # writes quickstart_ranking.png
    python examples/quickstart.py --output ranking.png

Loads the demo model bundled with csdn-reid (``synthetic-tiny``, no download),
draws a few people the model has never seen with the package's synthetic
generator (a visible gallery and infrared queries), embeds both sides, ranks the
gallery for every query with ``csdn.match``, prints the top matches, rank-1 and
mAP, and saves a picture of the ranked results (green border: the same person,
red: someone else). Runs in seconds on a CPU. The demo model only knows
synthetic images: for real cameras load a model trained on real data.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model needs no network; an explicit setting wins

import csdn  # noqa: E402
from csdn.data import SYSUMM01  # noqa: E402
from csdn.data.synthetic import write_sysu  # noqa: E402
from csdn.evaluation import eval_sysu  # noqa: E402
from csdn.retrieval.visualize import draw_ranking  # noqa: E402

# Held-out people: the bundled model was trained on seed 0 and checked on seed 1.
PEOPLE = dict(num_train_ids=2, num_test_ids=12, images_per_camera=3, seed=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("quickstart_ranking.png"),
                        help="ranked-results picture to write (default: quickstart_ranking.png)")
    parser.add_argument("--model", default=csdn.DEFAULT_MODEL,
                        help=f"model to load (default: the bundled {csdn.DEFAULT_MODEL!r})")
    parser.add_argument("--show", type=int, default=6, help="queries to print and draw (default 6)")
    parser.add_argument("--topk", type=int, default=5, help="matches per query to print and draw (default 5)")
    args = parser.parse_args(argv)

    model = csdn.load(args.model, progress=False)
    with tempfile.TemporaryDirectory(prefix="csdn-quickstart-") as folder:
        # a SYSU-MM01-style tree; its test identities are the held-out people
        write_sysu(Path(folder) / "people", **PEOPLE)
        people = SYSUMM01(Path(folder) / "people")
        query = people.query("all")  # every infrared image (cameras 3, 6)
        gallery = people.gallery("all", trial=0, shots=1)  # one visible image per person and camera
        print(f"{len(query)} infrared queries, {len(gallery)} visible gallery images, "
              f"{len(people.test_ids)} people the model never saw")

        query_embeddings = model.embed_image([s.path for s in query], modality="infrared")
        gallery_embeddings = model.embed_image([s.path for s in gallery], modality="visible")
        ranked = csdn.match(query_embeddings, gallery_embeddings, topk=args.topk)

        # one query per person, so the printout and the picture show different people
        first_of_person: dict[int, int] = {}
        for index, sample in enumerate(query):
            first_of_person.setdefault(sample.pid, index)
        shown = list(first_of_person.values())[: args.show]
        for q in shown:
            print(f"\nquery {Path(query[q].path).relative_to(people.root)} (person {query[q].pid}):")
            for rank, (g, score) in enumerate(zip(ranked.indices[q].tolist(), ranked.scores[q].tolist()), start=1):
                mark = "correct" if gallery[g].pid == query[q].pid else "wrong"
                print(f"  {rank}. {Path(gallery[g].path).relative_to(people.root)}  cosine {score:.3f}  {mark}")

        distances = -(query_embeddings @ gallery_embeddings.T).numpy()
        cmc, mean_ap, _ = eval_sysu(distances, [s.pid for s in query], [s.pid for s in gallery],
                                    [s.camid for s in query], [s.camid for s in gallery])
        print(f"\nall {len(query)} queries (SYSU-MM01 all-search protocol, one gallery draw): "
              f"rank-1 {100 * cmc[0]:.1f}%, mAP {100 * mean_ap:.1f}%")

        draw_ranking([query[q].path for q in shown], [s.path for s in gallery], ranked.indices[shown],
                     scores=ranked.scores[shown], query_ids=[query[q].pid for q in shown],
                     gallery_ids=[s.pid for s in gallery], topk=args.topk, output=args.output)
    print(f"wrote the ranked results to {args.output.resolve()} (green: same person, red: someone else)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
