"""How often storing embeddings in half precision changes the top-k, on real model outputs.

``csdn.match`` is exact on whatever is stored; this measures the other effect, of storing
itself: the bundled model (``synthetic-tiny``, the same code path as the RN50 models) embeds a
synthetic SYSU-MM01 test split, infrared queries against every visible test image, and the
top-k of the float32 embeddings is compared with the top-k of the same embeddings stored as
bfloat16 and float16 (``bench_match.py`` reports the same on synthetic re-ID-like rows).

    python benchmarks/half_storage_effect.py --test-ids 96 --images 6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import csdn
from csdn.data import SYSUMM01
from csdn.data.synthetic import write_sysu
from csdn.retrieval import match


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synthetic-tiny")
    parser.add_argument("--test-ids", type=int, default=96)
    parser.add_argument("--images", type=int, default=6, help="images per identity and camera")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = csdn.load(args.model)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "sysu"
        write_sysu(
            root,
            num_train_ids=4,
            num_test_ids=args.test_ids,
            images_per_camera=args.images,
            seed=args.seed,
            progress=True,
        )
        data = SYSUMM01(root)
        queries = [str(s.path) for s in data.query()]
        gallery = [str(s.path) for s in data.gallery(shots=args.images)]  # every visible test image
        query_rows = model.embed_image(queries, "infrared", progress=True)
        gallery_rows = model.embed_image(gallery, "visible", progress=True)

    k = args.topk
    full = match(query_rows, gallery_rows, topk=k)
    print(
        f"{args.model}: {len(queries)} infrared queries x {len(gallery)} visible gallery images, "
        f"{gallery_rows.shape[1]}-d, top-{k}"
    )
    for dtype in (torch.bfloat16, torch.float16):
        half = match(query_rows, gallery_rows.to(dtype), topk=k)
        order = (half.indices != full.indices).any(dim=1).float().mean().item()
        members = sum(set(a) != set(b) for a, b in zip(half.indices.tolist(), full.indices.tolist())) / len(queries)
        first = (half.indices[:, 0] != full.indices[:, 0]).float().mean().item()
        print(
            f"  stored as {str(dtype).removeprefix('torch.'):<9} top-{k} order changed for {100 * order:5.1f}% of "
            f"queries, its set for {100 * members:5.1f}%, rank-1 for {100 * first:5.1f}%; largest score change "
            f"{(half.scores - full.scores).abs().max().item():.1e}"
        )


if __name__ == "__main__":
    main()
