"""Benchmark ``csdn.match``: exact top-k over a gallery on disk, a naive baseline, and faiss.

The gallery is a ``.npy`` memmap written chunk by chunk into a temporary folder
(``--workdir``; deleted afterwards), so a 1,000,000 x 3072 float32 gallery (12.3 GB)
never has to fit in memory. Its rows are synthetic but shaped like re-identification
embeddings: ``--per-id`` images per identity, identities drawn in a 64-d latent space,
projected to ``--dim`` and blurred with isotropic noise, then scaled to unit norm (the
cost of exact matching does not depend on the data; approximate recall does).
Queries are fresh images of random identities among the gallery's first rows, so
every measured subset (baseline, faiss) holds their true matches.

Every measurement runs in its own fresh process, so its peak memory is its own; times
are the best of ``--repeat`` runs (one for the big gallery), as other work on a shared
machine only ever slows a run down, and memory the worst of them.
"peak RSS" is the rise of VmHWM over the call (it counts memmapped file pages, which
the kernel can drop at any time); "peak anon" is the rise of RssAnon, the memory the
call really allocates (sampled every 2 ms). Linux only (reads /proc/self).

    python benchmarks/bench_match.py                      # 1M x 3072, 100 queries
    python benchmarks/bench_match.py --gallery-size 200000 --queries 50
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from csdn.retrieval.matching import FaissIndex, match

LATENT_DIM = 64
GENERATE_CHUNK_IDS = 1000


# ---------------------------------------------------------------- synthetic data


class SyntheticEmbeddings:
    """Seeded identity-structured unit embeddings: ``rows(ids)`` draws one image per id."""

    def __init__(self, num_ids: int, dim: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(LATENT_DIM, dim, generator=generator) / LATENT_DIM**0.5
        self.centres = torch.randn(num_ids, LATENT_DIM, generator=generator)
        self.seed = seed

    def rows(self, ids: torch.Tensor, stream: int) -> torch.Tensor:
        """Unit rows for identities ``ids``; ``stream`` picks an independent seeded noise stream."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + stream + 1)
        latent = self.centres[ids] + 0.6 * torch.randn(len(ids), LATENT_DIM, generator=generator)
        rows = latent @ self.projection
        rows += 0.5 * torch.randn(rows.shape, generator=generator)
        return F.normalize(rows, dim=1)


def write_gallery(path: Path, data: SyntheticEmbeddings, size: int, per_id: int) -> None:
    """Write ``size`` rows to a ``.npy`` memmap, a few thousand rows at a time."""
    gallery = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, data.projection.shape[1]))
    chunk = GENERATE_CHUNK_IDS * per_id
    for number, start in enumerate(tqdm(range(0, size, chunk), desc="write gallery", unit="chunk")):
        ids = torch.arange(start, min(start + chunk, size)) // per_id
        gallery[start : start + len(ids)] = data.rows(ids, stream=number).numpy()
    gallery.flush()
    del gallery


# ---------------------------------------------------------------- measurement (runs in a worker)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Rise of peak RSS (VmHWM) and of sampled anonymous memory inside a ``with`` block, in MiB."""

    def __enter__(self) -> "PeakMemory":
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        self._base_rss, self._base_anon = _status_kb("VmRSS"), _status_kb("RssAnon")
        self._peak_anon = self._base_anon
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak_anon = max(self._peak_anon, _status_kb("RssAnon"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        self._peak_anon = max(self._peak_anon, _status_kb("RssAnon"))
        self.rss_mib = (_status_kb("VmHWM") - self._base_rss) / 1024
        self.anon_mib = (self._peak_anon - self._base_anon) / 1024


def _timed(call: Callable[[], Any]) -> dict[str, Any]:
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - start
    return {"result": result, "seconds": seconds, "rss_mib": memory.rss_mib, "anon_mib": memory.anon_mib}


def _naive(queries: torch.Tensor, gallery: torch.Tensor, topk: int) -> np.ndarray:
    """What one writes without thinking about memory: the full ``Q x G`` score matrix, then topk."""
    return torch.topk(queries @ gallery.T, topk, dim=1).indices.numpy()


def job(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement, run in a fresh process by ``in_fresh_process``."""
    gallery = np.load(spec["path"], mmap_mode="r")[: spec["rows"]]
    queries, topk, kind = torch.from_numpy(spec["queries"]), spec["topk"], spec["kind"]
    if spec["in_memory"]:
        gallery = torch.from_numpy(np.array(gallery))
    extra: dict[str, Any] = {}
    if kind in ("ivf", "hnsw"):
        start = time.perf_counter()
        index = FaissIndex(gallery, method=kind)
        extra["build_seconds"] = time.perf_counter() - start

    def search(batch: torch.Tensor) -> np.ndarray:
        if kind == "exact":
            return match(batch, gallery, topk, chunk_size=spec.get("chunk_size")).indices.numpy()
        if kind == "naive":
            return _naive(batch, gallery, topk)
        return index.search(batch, topk).indices.numpy()

    runs = [_timed(lambda: search(queries)) for _ in range(spec["repeat"])]
    measured = min(runs, key=lambda run: run["seconds"])
    measured["rss_mib"] = max(run["rss_mib"] for run in runs)
    measured["anon_mib"] = max(run["anon_mib"] for run in runs)
    if spec.get("single"):
        extra["single_query_seconds"] = min(_timed(lambda: search(queries[i : i + 1]))["seconds"] for i in range(3))
    return {**measured, **extra}


def in_fresh_process(**spec: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(job, spec).result()


# ---------------------------------------------------------------- report


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate search returned."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def line(name: str, rows: int, queries: int, run: dict[str, Any]) -> str:
    return (
        f"{name:<28} G={rows:>9,}  {queries / run['seconds']:>9.1f} queries/s  {run['seconds']:>8.2f} s  "
        f"peak RSS +{run['rss_mib']:>8.1f} MiB  peak anon +{run['anon_mib']:>7.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery-size", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=3072, help="3072 = embed_image(flip=False); flip=True gives 6144")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--per-id", type=int, default=10, help="gallery images per identity")
    parser.add_argument("--chunk-size", type=int, default=None, help="gallery rows per chunk (default: automatic)")
    parser.add_argument("--baseline-size", type=int, default=100_000, help="gallery rows for the naive comparison")
    parser.add_argument("--faiss-size", type=int, default=100_000, help="gallery rows for faiss IVF (0: skip)")
    parser.add_argument("--hnsw-size", type=int, default=20_000, help="gallery rows for faiss HNSW (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement on the smaller galleries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the temporary gallery file goes")
    args = parser.parse_args()
    size = args.gallery_size
    if min(size, args.queries, args.dim, args.per_id, args.topk, args.repeat) < 1:
        parser.error("--gallery-size, --queries, --dim, --per-id, --topk and --repeat must be positive")

    data = SyntheticEmbeddings(-(-size // args.per_id), args.dim, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    smallest = min(n for n in (size, args.baseline_size, args.faiss_size, args.hnsw_size) if n > 0)
    query_ids = torch.randint(0, -(-min(smallest, size) // args.per_id), (args.queries,), generator=generator)
    queries = data.rows(query_ids, stream=-1).numpy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; D={args.dim}, Q={args.queries}, "
          f"k={args.topk}; load average {os.getloadavg()[0]:.1f} (other work on the machine slows every number)")

    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        path = Path(folder) / "gallery.npy"
        start = time.perf_counter()
        write_gallery(path, data, size, args.per_id)
        print(f"wrote {size:,} x {args.dim} float32 gallery ({path.stat().st_size / 1e9:.1f} GB) "
              f"in {time.perf_counter() - start:.0f} s")
        common = dict(path=str(path), queries=queries, topk=args.topk, repeat=args.repeat)

        big = in_fresh_process(
            kind="exact", rows=size, in_memory=False, chunk_size=args.chunk_size, **{**common, "repeat": 1}
        )
        print(line("exact, memmap", size, args.queries, big))
        print(f"  (the naive way would hold the {size * args.dim * 4 / 2**30:.1f} GiB gallery and a "
              f"{args.queries * size * 4 / 2**20:.0f} MiB score matrix in RAM)")

        rows = min(args.baseline_size, size)
        naive = in_fresh_process(kind="naive", rows=rows, in_memory=True, **common)
        exact = in_fresh_process(kind="exact", rows=rows, in_memory=True, chunk_size=args.chunk_size, **common)
        print(line("naive full matrix, in RAM", rows, args.queries, naive))
        print(line("exact, in RAM", rows, args.queries, exact))
        print(f"  exact/naive: speed x{naive['seconds'] / exact['seconds']:.2f}, peak anon memory "
              f"x{exact['anon_mib'] / max(naive['anon_mib'], 1e-9):.2f}; "
              f"same top-{args.topk} as naive: {recall(exact['result'], naive['result']):.4f}")

        for method, wanted in (("ivf", args.faiss_size), ("hnsw", args.hnsw_size)):
            rows = min(wanted, size)
            if rows < 1:
                continue
            try:
                run = in_fresh_process(kind=method, rows=rows, in_memory=False, single=True, **common)
            except ImportError as error:
                print(f"faiss: skipped ({error})")
                break
            truth = in_fresh_process(kind="exact", rows=rows, in_memory=False, single=True, **common)
            print(line(f"faiss {method}", rows, args.queries, run))
            print(line("exact, memmap", rows, args.queries, truth))
            print(f"  faiss {method}: build {run['build_seconds']:.1f} s, recall@{args.topk} vs exact "
                  f"{recall(run['result'], truth['result']):.3f}; one query alone: faiss "
                  f"{1e3 * run['single_query_seconds']:.1f} ms, exact {1e3 * truth['single_query_seconds']:.1f} ms")


if __name__ == "__main__":
    main()
