"""Stage-3 batch assembly per data-loading worker: decoding every JPEG at every step vs the pixel cache.

One worker = one process on one thread, which is what each ``--workers`` process of ``csdn train``
is. Both sides assemble the same stage-3 batches (8 identities x 4 images, three augmented views
each: 96 images per step, ``csdn.train.loader.stage3_batches``) from the same synthetic training
set: JPEG crops of varied sizes like SYSU-MM01's (about 120-300 px wide, 1:2 to 1:3), written to a
temporary folder. ``decode`` opens, decodes and resizes each file at each step (``pixel_cache=False``);
``cached`` reads the pre-resized uint8 pixels from the run folder's memory map. Rounds alternate
the two sides; images/s is the median over rounds, and the ratio is the median of per-round ratios.
The cache's one-time build is reported separately.

    python benchmarks/bench_loader.py                 # ~1-2 minutes on one core
    python benchmarks/bench_loader.py --images 2000 --rounds 5

The last line reads ``ratio <cached images/s / decode images/s>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from csdn import CSDNConfig
from csdn.train import TrainConfig
from csdn.train.augment import TrainAugment
from csdn.train.data import TrainImages
from csdn.train.loader import stage3_batches
from csdn.train.pixelcache import open_or_build
from csdn.train.sampler import IdentitySampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import cpu_name  # noqa: E402  (the same CPU report as the training benchmark)


def write_crops(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` person-crop-sized JPEGs of smooth random content (JPEG-compressible like photos)."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width = int(rng.integers(120, 301))
        height = int(width * rng.uniform(2.0, 3.0))
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        paths.append(folder / f"{index:05d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def training_set(paths: list[Path], ids: int) -> TrainImages:
    half = len(paths) // 2
    labels = np.arange(half) % ids
    return TrainImages(list(paths[:half]), labels.copy(), list(paths[half : 2 * half]), labels.copy(), list(range(ids)))


def assemble(train_set: TrainImages, augment: TrainAugment, pixels, steps: int, epoch: int) -> float:
    """Seconds to assemble ``steps`` stage-3 batches."""
    plan = IdentitySampler(train_set, 8, 4, seed=1, steps_per_epoch=steps).epoch(epoch, 0)
    started = time.perf_counter()
    for _ in stage3_batches(train_set, plan, augment, seed=1, epoch=epoch, pixels=pixels):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="training JPEGs (half visible, half infrared)")
    parser.add_argument("--ids", type=int, default=60, help="identities")
    parser.add_argument("--steps", type=int, default=4, help="stage-3 steps per timed run (96 images each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    augment = TrainAugment(CSDNConfig.rn50(), TrainConfig())
    per_step = 3 * 8 * 4
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; one worker = one process, 1 thread")
    with tempfile.TemporaryDirectory() as folder:
        data, run = Path(folder) / "data", Path(folder) / "run"
        data.mkdir()
        train_set = training_set(write_crops(data, args.images, args.seed), args.ids)
        size, resample = augment.test.size, augment.test.resample
        started = time.perf_counter()
        pixels = {
            modality: open_or_build(run, modality, images, augment.resized, size, resample, progress=False)
            for modality, images in (("visible", train_set.visible_images), ("infrared", train_set.infrared_images))
        }
        build = time.perf_counter() - started
        print(f"{args.images} JPEGs; building the cache once: {build:.1f} s ({args.images / build:.0f} images/s)")
        rates: dict[str, list[float]] = {"decode": [], "cached": []}
        for round_ in range(args.rounds):
            order = ("decode", "cached") if round_ % 2 == 0 else ("cached", "decode")
            for side in order:
                seconds = assemble(train_set, augment, pixels if side == "cached" else None, args.steps, round_)
                rates[side].append(args.steps * per_step / seconds)
            print(f"  round {round_ + 1}: decode {rates['decode'][-1]:.0f}, cached {rates['cached'][-1]:.0f} images/s")
        ratio = statistics.median(c / d for c, d in zip(rates["cached"], rates["decode"]))
        for side, values in rates.items():
            print(f"{side:<7} {statistics.median(values):8.1f} images/s per worker")
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
