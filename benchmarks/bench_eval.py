"""Wall time of the full SYSU-MM01 all-search, single-shot (or ``--shots 10``), 10-trial protocol: ``csdn.evaluate`` vs the reference way.

A SYSU-MM01 test tree of the real size is written to a temporary folder: 96 test
identities, 3803 infrared query images (cameras 3, 6) and 6775 visible images in
301 (identity, camera) folders of cameras 1, 2, 4, 5, i.e. 301 gallery images per
trial. Images are small JPEGs (``--size``, default 64x32 = the tiny model's input)
and the model is the tiny CSDN (random weights), so it runs in minutes on 2 CPU cores.

- **csdn.evaluate**: every distinct image embedded once (queries, and the union of the
  ten galleries), flip in the same forward pass, vectorised metrics.
- **reference way** (the shape of the common VI-ReID test scripts): queries embedded once,
  the gallery re-embedded for every trial, the flip as a second forward pass
  (``embed_image(..., flip=False)`` on the images and on mirrored copies), metrics in a
  per-query loop (``tests/reference_metrics.py``).

Both give the same scores up to float rounding (checked). Also timed: the metrics alone over the ten trials.
The two ways run alternately ``--repeat`` times and the fastest run of each counts;
process CPU time is printed next to wall time, as it is steadier on a shared machine.

    python benchmarks/bench_eval.py                 # about 2-5 minutes on 2 cores
    python benchmarks/bench_eval.py --repeat 1 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from csdn import CSDN, CSDNConfig
from csdn.data import SYSUMM01
from csdn.data.samples import sample_arrays
from csdn.evaluation import eval_sysu
from csdn.images.transforms import load_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_metrics import reference_metrics  # noqa: E402

TEST_IDS, INFRARED_IMAGES, VISIBLE_IMAGES, VISIBLE_FOLDERS = 96, 3803, 6775, 301


def _split(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """``parts`` positive counts summing to ``total``, spread within one of each other."""
    counts = np.full(parts, total // parts)
    counts[rng.choice(parts, total - counts.sum(), replace=False)] += 1
    return counts


def write_sysu_test_tree(root: Path, size: tuple[int, int], seed: int = 0) -> None:
    """Real-size SYSU-MM01 test split of random-pixel JPEGs, every one different (no tied distances)."""
    rng = np.random.default_rng(seed)
    pids = sorted(rng.choice(np.arange(1, 534), TEST_IDS, replace=False).tolist())
    visible_pairs = [(p, c) for p in pids for c in (1, 2, 4, 5)]
    dropped = set()
    while len(dropped) < len(visible_pairs) - VISIBLE_FOLDERS:  # some identities miss some cameras
        pair = visible_pairs[rng.integers(len(visible_pairs))]
        if sum((pair[0], c) not in dropped for c in (1, 2, 4, 5)) > 1:
            dropped.add(pair)
    folders = [
        (p, c, n)
        for (p, c), n in zip([(p, c) for p in pids for c in (3, 6)], _split(INFRARED_IMAGES, 2 * TEST_IDS, rng))
    ]
    kept = [pair for pair in visible_pairs if pair not in dropped]
    folders += [(p, c, n) for (p, c), n in zip(kept, _split(VISIBLE_IMAGES, VISIBLE_FOLDERS, rng))]
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True)
    for pid, cam, count in folders:
        folder = root / f"cam{cam}" / f"{pid:04d}"
        folder.mkdir()
        for n in range(1, count + 1):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{n:04d}.jpg", quality=90)
    (root / "exp").mkdir()
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, pids)) + "\n")


def reference_embed(model: CSDN, samples, batch_size: int) -> np.ndarray:
    """Decode once, then two forward passes: the images and their mirrored copies."""
    images = [load_image(s.path) for s in samples]
    modality = samples[0].modality
    plain = model.embed_image(images, modality, batch_size=batch_size, flip=False)
    mirrored = model.embed_image(
        [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images], modality, batch_size=batch_size, flip=False
    )
    # each f(x) half has unit norm, so ||f(x)|| = sqrt(2) for both passes: this is concat(f(x), f(flip x)) / ||.||
    return (torch.cat([plain, mirrored], dim=1) / 2**0.5).numpy()


def reference_protocol(model: CSDN, reader: SYSUMM01, batch_size: int, shots: int) -> tuple[list, list[tuple], float]:
    """Scores of the ten trials, their metric inputs, and the time the per-query loop took."""
    query = reader.query("all")
    q_pids, q_cams = sample_arrays(query)
    q = reference_embed(model, query, batch_size)
    scores, distmats, metric_time = [], [], 0.0
    for trial in range(10):
        gallery = reader.gallery("all", trial=trial, shots=shots)
        g_pids, g_cams = sample_arrays(gallery)
        dist = -(q @ reference_embed(model, gallery, batch_size).T)
        start = time.perf_counter()
        scores.append(reference_metrics(dist, q_pids, g_pids, q_cams, g_cams, rule="sysu"))
        metric_time += time.perf_counter() - start
        distmats.append((dist, q_pids, g_pids, q_cams, g_cams))
    return scores, distmats, metric_time


def timed(function):
    """``(result, wall seconds, CPU seconds of this process, all threads)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", type=int, nargs=2, default=(64, 32), metavar=("H", "W"), help="image file size (default 64 32)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--shots", type=int, choices=(1, 10), default=1, help="gallery images per identity and camera (default 1)"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="alternating runs of each way; the fastest counts (default 2)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import csdn

    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny()).eval()
    ours_runs, reference_runs, vectorised_runs, loop_times = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as folder:
        root = Path(folder) / "SYSU-MM01"
        start = time.perf_counter()
        write_sysu_test_tree(root, tuple(args.size))
        print(
            f"wrote the test tree ({INFRARED_IMAGES + VISIBLE_IMAGES} images, {tuple(args.size)} px) in {time.perf_counter() - start:.1f} s"
        )
        print(f"torch threads: {torch.get_num_threads()}, model: tiny CSDN, input {model.config.image_size}")
        for run in range(args.repeat):  # alternate, so a change in machine load hits both ways alike
            ours_runs.append(
                timed(
                    lambda: csdn.evaluate(
                        model, SYSUMM01(root), mode="all", shots=args.shots, batch_size=args.batch_size, progress=False
                    )
                )
            )
            reference_runs.append(timed(lambda: reference_protocol(model, SYSUMM01(root), args.batch_size, args.shots)))
            distmats = reference_runs[-1][0][1]
            loop_times.append(reference_runs[-1][0][2])
            vectorised_runs.append(timed(lambda distmats=distmats: [eval_sysu(*inputs) for inputs in distmats]))
            print(
                f"run {run + 1}: csdn.evaluate {ours_runs[-1][1]:.1f} s, reference way {reference_runs[-1][1]:.1f} s (wall)"
            )
        reader = SYSUMM01(root)
        embedded = len(
            {s.path for s in reader.query()}
            | {s.path for t in range(10) for s in reader.gallery(trial=t, shots=args.shots)}
        )

    result, reference_scores = ours_runs[0][0], reference_runs[0][0][0]
    trials = result.searches[0].trials
    diff = max(
        max(np.abs(t.cmc - ref[0]).max(), abs(t.mAP - ref[1]), abs(t.mINP - ref[2]))
        for t, ref in zip(trials, reference_scores)
    )
    metric_diff = max(abs(v[1] - r[1]) for v, r in zip(vectorised_runs[0][0], reference_scores))
    ours_wall, ours_cpu = min(r[1] for r in ours_runs), min(r[2] for r in ours_runs)
    ref_wall, ref_cpu = min(r[1] for r in reference_runs), min(r[2] for r in reference_runs)
    vectorised, loop = min(r[1] for r in vectorised_runs), min(loop_times)
    reference_forward = 2 * (INFRARED_IMAGES + 10 * trials[0].num_gallery)
    print()
    shots = "single-shot" if args.shots == 1 else "multi-shot"
    print(
        f"SYSU-MM01 all-search {shots}, 10 trials: {trials[0].num_query} queries, {trials[0].num_gallery} gallery images per trial"
    )
    print(f"(fastest of {args.repeat} runs)            wall      CPU")
    print(
        f"  csdn.evaluate              {ours_wall:7.2f} s {ours_cpu:7.2f} s   ({embedded} distinct images embedded, flip in the same pass)"
    )
    print(
        f"  reference way              {ref_wall:7.2f} s {ref_cpu:7.2f} s   ({reference_forward} image forward passes, gallery per trial)"
    )
    print(f"  speed-up                   {ref_wall / ours_wall:7.2f} x {ref_cpu / ours_cpu:7.2f} x")
    print(f"  max score difference between the two ways: {diff:.2e}")
    print("    (the embeddings agree to float rounding, ~3e-8; with random weights all distances lie within a few")
    print(
        "     hundredths of each other, so rounding reorders some near-ties; the metrics on equal inputs agree exactly)"
    )
    print()
    print("metrics alone, 10 trials (wall):")
    print(f"  vectorised                 {vectorised * 1000:7.1f} ms")
    print(f"  per-query loop             {loop * 1000:7.1f} ms")
    print(f"  speed-up                   {loop / vectorised:7.1f} x   (max mAP difference {metric_diff:.1e})")
    print()
    print(
        f"rank-1 {100 * result.rank1:.2f}  mAP {100 * result.mAP:.2f}  mINP {100 * result.mINP:.2f}  (random weights: chance level)"
    )


if __name__ == "__main__":
    main()
