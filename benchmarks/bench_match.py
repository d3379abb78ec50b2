"""Benchmark ``csdn.match`` against the plain full-matrix product, in memory and memory-mapped.

One run reports, with ratios to the baseline measured in the same run:

- in memory (``--memory-size`` rows, default 200,000 x 3072): the plain baseline
  ``(q @ g.T).topk(k)`` on float32, exact float32 ``match`` (default: bfloat16 screen + float32
  re-scoring; and with ``screen=False``, float32 products only), ``match`` on bfloat16 and on
  float16 copies of the gallery (exact on the stored values), each also as a ``PreparedGallery`` (its
  bfloat16 copy and norms made once, before the rounds, for repeated searches), and faiss IVF (``--faiss-size``
  rows, built once, approximate);
- memory-mapped (``--gallery-size`` rows, default 1,000,000: a 12.3 GB float32 ``.npy`` and a
  6.1 GB bfloat16 one): exact float32 and bfloat16 ``match`` streaming the file, next to the
  speed of simply reading that file (page cache or disk) in the same process.

The machine comes first: the CPU model, whether it has bfloat16 matrix instructions (AMX tiles,
AVX-512 BF16), and its own float32 and bfloat16 matrix-product peaks (2048^3, best of the
rounds). The in-memory section also times, in the same rotation as the methods, the two parts
of the limit for exact search on that machine: one pass over the stored gallery (a sum, which
reads every byte once) and one bfloat16 product of the queries with the whole gallery (already
in bfloat16). Each method's time is printed as a multiple of ``pass + product`` for its
gallery's dtype: 1.0 would be search at the cost of reading the data and one fast product.

Correctness is checked on the way: exact float32 ``match`` against the baseline's top-k, half
precision against float32 arithmetic on the stored (upcast) values, and how often storing in
half precision itself changes the top-k against the original float32 embeddings.

Timing: the methods of a section run in one worker process holding its galleries, in rotated
order, ``--repeat`` rounds; the best time of each counts (other work on a shared machine only
ever slows a run down), and its worst memory. Memory, the same way for every method: "anon" is
the rise of RssAnon (memory the call allocates; sampled every 2 ms), "RSS" the rise of VmHWM
(which also counts file pages a memory map brings in, which the kernel can drop at any time).
Linux only (reads /proc/self). Rows are synthetic but shaped like re-identification
embeddings (``--per-id`` images per identity around identity centres in a 64-d latent space).

    python benchmarks/bench_match.py                                  # 200k in memory, 1M memmapped
    python benchmarks/bench_match.py --gallery-size 300000 --memory-size 100000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from csdn.retrieval import FaissIndex, PreparedGallery, match

LATENT_DIM = 64
GENERATE_CHUNK_IDS = 1000
READ_CHUNK_BYTES = 256 * 2**20


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


def write_galleries(folder: Path, data: SyntheticEmbeddings, size: int, per_id: int) -> dict[str, Path]:
    """``size`` rows as a float32 ``.npy`` and the same rows as bfloat16 (raw ``uint16`` patterns)."""
    dim = data.projection.shape[1]
    paths = {"float32": folder / "gallery.npy", "bfloat16": folder / "gallery-bf16.npy"}
    full = np.lib.format.open_memmap(paths["float32"], mode="w+", dtype=np.float32, shape=(size, dim))
    half = np.lib.format.open_memmap(paths["bfloat16"], mode="w+", dtype=np.uint16, shape=(size, dim))
    chunk = GENERATE_CHUNK_IDS * per_id
    for number, start in enumerate(tqdm(range(0, size, chunk), desc="write galleries", unit="chunk")):
        ids = torch.arange(start, min(start + chunk, size)) // per_id
        rows = data.rows(ids, stream=number)
        full[start : start + len(ids)] = rows.numpy()
        half[start : start + len(ids)] = rows.bfloat16().view(torch.int16).numpy().view(np.uint16)
    full.flush()
    half.flush()
    return paths


def open_gallery(path: Path, rows: int) -> torch.Tensor:
    """The first ``rows`` rows of a gallery file, memory-mapped, as a tensor of its stored dtype."""
    array = np.load(path, mmap_mode="r")[:rows]
    with warnings.catch_warnings():  # a read-only map: nothing writes to it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if array.dtype == np.uint16 else tensor


# ---------------------------------------------------------------- measurement (runs in a worker)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Rise of peak RSS (VmHWM) and of sampled anonymous memory (RssAnon) inside a ``with`` block, in MiB."""

    def __enter__(self) -> PeakMemory:
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


def measure(call: Callable[[], Any]) -> dict[str, Any]:
    with torch.no_grad(), PeakMemory() as memory:
        start = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - start
    return {"result": result, "seconds": seconds, "rss_mib": memory.rss_mib, "anon_mib": memory.anon_mib}


def rotated(methods: dict[str, Callable[[], Any]], repeat: int) -> dict[str, dict[str, Any]]:
    """Each method ``repeat`` times, the order rotated every round; best time, worst memory."""
    names = list(methods)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            runs[name].append(measure(methods[name]))
    best = {}
    for name, measured in runs.items():
        fastest = min(measured, key=lambda run: run["seconds"])
        best[name] = {
            **fastest,
            "rss_mib": max(r["rss_mib"] for r in measured),
            "anon_mib": max(r["anon_mib"] for r in measured),
        }
    return best


def read_speed(path: Path) -> float:
    """Seconds to read a whole file sequentially into one reused buffer (page cache or disk)."""
    buffer = bytearray(READ_CHUNK_BYTES)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass
    return time.perf_counter() - start


def in_memory_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Section 1: every method on the same in-memory galleries, alternated."""
    rows, topk = spec["rows"], spec["topk"]
    queries = torch.from_numpy(spec["queries"])
    full = torch.from_numpy(np.array(np.load(spec["float32"], mmap_mode="r")[:rows]))
    bf16 = open_gallery(Path(spec["bfloat16"]), rows).clone()
    fp16 = full.half()
    narrow_queries = queries.bfloat16()
    prepare_seconds = {}
    prepared = {}
    for name, rows_ in (("fp32", full), ("bfloat16", bf16), ("float16", fp16)):
        start = time.perf_counter()
        prepared[name] = PreparedGallery(rows_)
        prepare_seconds[name] = time.perf_counter() - start
    methods = {
        "plain fp32 (q @ g.T).topk": lambda: torch.topk(queries @ full.T, topk, dim=1).indices,
        "limit: pass over fp32 rows": lambda: full.sum(),
        "limit: pass over half rows": lambda: bf16.sum(),
        "limit: bf16 product": lambda: narrow_queries @ bf16.T,
        "match fp32": lambda: match(queries, full, topk).indices,
        "match fp32, screen=False": lambda: match(queries, full, topk, screen=False).indices,
        "match bfloat16": lambda: match(queries, bf16, topk).indices,
        "match float16": lambda: match(queries, fp16, topk).indices,
        "match fp32, prepared": lambda: match(queries, prepared["fp32"], topk).indices,
        "match bfloat16, prepared": lambda: match(queries, prepared["bfloat16"], topk).indices,
        "match float16, prepared": lambda: match(queries, prepared["float16"], topk).indices,
    }
    best = rotated(methods, spec["repeat"])
    references = {  # float32 arithmetic on the stored values (upcast), chunk by chunk
        "match bfloat16": match(queries, bf16, topk, screen=False).indices,
        "match float16": match(queries, fp16, topk, screen=False).indices,
    }
    references["match bfloat16, prepared"] = references["match bfloat16"]
    references["match float16, prepared"] = references["match float16"]
    return {"best": best, "references": references, "prepare_seconds": prepare_seconds}


def memmap_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Section 2: exact match streaming each gallery file, after reading the file once plainly."""
    queries = torch.from_numpy(spec["queries"])
    out = {}
    for dtype in ("float32", "bfloat16"):
        path = Path(spec[dtype])
        plain_read = read_speed(path)
        gallery = open_gallery(path, spec["rows"])
        run = measure(lambda gallery=gallery: match(queries, gallery, spec["topk"]).indices)
        run["read_seconds"] = plain_read
        run["bytes"] = path.stat().st_size
        out[f"match {dtype}, memmap"] = run
    return out


def faiss_job(spec: dict[str, Any]) -> dict[str, Any]:
    gallery = open_gallery(Path(spec["float32"]), spec["rows"])
    queries = torch.from_numpy(spec["queries"])
    start = time.perf_counter()
    index = FaissIndex(gallery, method="ivf")
    build = time.perf_counter() - start
    best = rotated(
        {
            "faiss ivf": lambda: index.search(queries, spec["topk"]).indices,
            "match fp32, same rows": lambda: match(queries, gallery, spec["topk"]).indices,
        },
        spec["repeat"],
    )
    return {"best": best, "build_seconds": build}


def in_fresh_process(job: Callable[[dict[str, Any]], dict[str, Any]], **spec: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(job, spec).result()


# ---------------------------------------------------------------- report


def overlap(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean fraction of ``truth``'s top-k that ``found`` holds."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def line(name: str, rows: int, queries: int, run: dict[str, Any], baseline: float | None = None) -> str:
    ratio = f"  x{baseline / run['seconds']:5.2f} vs plain" if baseline else ""
    return (
        f"{name:<30} G={rows:>9,}  {queries / run['seconds']:>8.1f} queries/s  {run['seconds']:>7.2f} s{ratio}"
        f"  anon +{run['anon_mib']:>7.1f} MiB  RSS +{run['rss_mib']:>8.1f} MiB"
    )


def cpu_flags() -> set[str]:
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("flags"):
                return set(row.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def matmul_peaks(rounds: int = 3, size: int = 2048) -> dict[str, float]:
    """GFLOP/s of a ``size``^3 product in float32 and bfloat16, best of ``rounds`` (alternated)."""
    a = torch.randn(size, size)
    operands = {"fp32": (a, a.T.contiguous()), "bf16": (a.bfloat16(), a.T.contiguous().bfloat16())}
    best = {name: 0.0 for name in operands}
    for _ in range(rounds):
        for name, (x, y) in operands.items():
            x @ y  # warm
            start = time.perf_counter()
            x @ y
            best[name] = max(best[name], 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def limit_seconds(best: dict[str, dict[str, Any]], dtype: str) -> float:
    """One pass over the stored rows plus one bfloat16 product: the floor for exact search."""
    passes = best["limit: pass over fp32 rows" if dtype == "float32" else "limit: pass over half rows"]
    return passes["seconds"] + best["limit: bf16 product"]["seconds"]


def cpu_name() -> str:
    try:
        for row in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if row.startswith("Model name:"):
                return row.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery-size", type=int, default=1_000_000, help="rows of the memory-mapped galleries")
    parser.add_argument("--memory-size", type=int, default=200_000, help="rows of the in-memory comparison")
    parser.add_argument("--faiss-size", type=int, default=100_000, help="rows for faiss IVF (0: skip)")
    parser.add_argument("--dim", type=int, default=3072, help="3072 = embed_image(flip=False); flip=True gives 6144")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--per-id", type=int, default=10, help="gallery images per identity")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the in-memory comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the temporary gallery files go")
    args = parser.parse_args()
    if min(args.gallery_size, args.memory_size, args.queries, args.dim, args.per_id, args.topk, args.repeat) < 1:
        parser.error("sizes, --queries, --dim, --per-id, --topk and --repeat must be positive")
    size = max(args.gallery_size, args.memory_size, args.faiss_size)

    data = SyntheticEmbeddings(-(-size // args.per_id), args.dim, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    smallest = min(n for n in (args.memory_size, args.faiss_size, args.gallery_size) if n > 0)
    query_ids = torch.randint(0, -(-smallest // args.per_id), (args.queries,), generator=generator)
    queries = data.rows(query_ids, stream=-1).numpy()
    flags = cpu_flags()
    peaks = matmul_peaks()
    print(
        f"bfloat16 matrix units: AMX {'yes' if {'amx_bf16', 'amx_tile'} <= flags else 'no'}, "
        f"AVX-512 BF16 {'yes' if 'avx512_bf16' in flags else 'no'}; "
        f"matmul peaks (2048^3, best of 3): fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    print(
        f"{cpu_name()}, {os.cpu_count()} CPUs; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"D={args.dim}, Q={args.queries}, k={args.topk}; load average {os.getloadavg()[0]:.1f} at start "
        "(other work on the machine slows every number)"
    )

    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)  # a folder named for the files may not exist yet
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        start = time.perf_counter()
        paths = write_galleries(Path(folder), data, size, args.per_id)
        print(
            f"wrote {size:,} x {args.dim} galleries (float32 {paths['float32'].stat().st_size / 1e9:.1f} GB, "
            f"bfloat16 {paths['bfloat16'].stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - start:.0f} s"
        )
        common = {
            "queries": queries,
            "topk": args.topk,
            "repeat": args.repeat,
            **{dtype: str(path) for dtype, path in paths.items()},
        }

        rows = args.memory_size
        section = in_fresh_process(in_memory_job, rows=rows, **common)
        best, baseline = section["best"], section["best"]["plain fp32 (q @ g.T).topk"]
        print(f"\nin memory, {rows:,} x {args.dim}, {args.queries} queries (best of {args.repeat}, rotated):")
        for name, run in best.items():
            print(line(name, rows, args.queries, run, baseline["seconds"]))
        print(
            "  the limit (one pass over the stored rows + one bf16 product): "
            f"float32 gallery {limit_seconds(best, 'float32'):.2f} s, half gallery {limit_seconds(best, 'bfloat16'):.2f} s"
        )
        for name in (
            "plain fp32 (q @ g.T).topk",
            "match fp32",
            "match fp32, screen=False",
            "match bfloat16",
            "match float16",
            "match fp32, prepared",
            "match bfloat16, prepared",
            "match float16, prepared",
        ):
            dtype = "float32" if "fp32" in name else "half"
            print(f"  {name:<30} {best[name]['seconds'] / limit_seconds(best, dtype):5.2f}x the limit")
        once = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in section["prepare_seconds"].items())
        print(f"  PreparedGallery (bfloat16 copy and norms kept, made once before the rounds): {once}")
        truth = baseline["result"]
        for name in ("match fp32", "match fp32, prepared"):
            print(f"  {name} top-{args.topk} = plain top-{args.topk}: {overlap(best[name]['result'], truth):.4f}")
        for name, reference in section["references"].items():
            same = torch.equal(best[name]["result"], reference)
            changed = float(np.mean([set(a) != set(b) for a, b in zip(best[name]["result"].tolist(), truth.tolist())]))
            print(
                f"  {name}: identical to float32 arithmetic on its stored values: {same}; storing in half "
                f"precision changed the top-{args.topk} set of {100 * changed:.1f}% of queries "
                f"(overlap {overlap(best[name]['result'], truth):.4f}) against the float32 embeddings"
            )

        if args.faiss_size:
            rows = min(args.faiss_size, size)
            try:
                section = in_fresh_process(faiss_job, rows=rows, **common)
            except ImportError as error:
                print(f"faiss: skipped ({error})")
            else:
                print(
                    f"\nfaiss IVF, {rows:,} rows memory-mapped (index built once in {section['build_seconds']:.0f} s):"
                )
                exact = section["best"]["match fp32, same rows"]
                for name, run in section["best"].items():
                    print(line(name, rows, args.queries, run))
                print(
                    f"  faiss recall@{args.topk} vs exact: {overlap(section['best']['faiss ivf']['result'], exact['result']):.3f}"
                )

        rows = args.gallery_size
        section = in_fresh_process(memmap_job, rows=rows, **{**common, "repeat": 1})
        print(
            f"\nmemory-mapped, {rows:,} x {args.dim}, {args.queries} queries (one run each; files "
            "read plainly just before, same process):"
        )
        for name, run in section.items():
            gigabytes = run["bytes"] / 1e9
            print(line(name, rows, args.queries, run))
            print(
                f"  streams {gigabytes / run['seconds']:.2f} GB/s; reading the {gigabytes:.1f} GB file alone: "
                f"{gigabytes / run['read_seconds']:.2f} GB/s ({run['read_seconds']:.1f} s)"
            )


if __name__ == "__main__":
    main()
