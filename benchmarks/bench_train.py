"""Stage-3 training throughput of the full CSDN-RN50 (288x144), in images per second.

One step is what ``csdn.train.fit`` runs in stage 3: P identities x K images per
modality, i.e. 2*P*K visible views (plain + channel-exchanged) and P*K infrared
images through ``forward_train``, all stage-3 losses, backward, Adam. Random
weights and random input tensors are used (speed does not depend on them);
``--augment`` also times the CPU decode + augmentation of the same number of
images, which workers (``--workers`` in ``csdn train``) must keep up with.

    python benchmarks/bench_train.py                      # CPU, 8 ids x 4 images
    python benchmarks/bench_train.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from csdn import CSDN, CSDNConfig
from csdn.train import TrainConfig
from csdn.train.augment import TrainAugment
from csdn.train.stages import autocast_factory, image_step, make_optimizer


def _batch(config: CSDNConfig, ids: int, per_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    height, width = config.image_size
    count = ids * per_id
    batch = {view: torch.randn(count, 3, height, width, device=device) for view in ("visible", "exchange", "infrared")}
    batch["labels"] = torch.arange(ids, device=device).repeat_interleave(per_id)
    return batch


def train_throughput(args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model_config = CSDNConfig.rn50(num_classes=args.classes)
    model = CSDN(model_config).to(device).train()
    config = TrainConfig(ids_per_batch=args.ids, images_per_id=args.per_id, precision=args.precision)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    optimizer = make_optimizer(model, 3, config, frozen)
    for group in optimizer.param_groups:
        group["lr"] = 3e-4 * group.get("lr_factor", 1.0)
    scaler = torch.amp.GradScaler("cuda") if args.precision == "fp16" else None
    autocast = autocast_factory(args.precision, device)
    text = torch.randn(args.classes, model_config.embed_dim, device=device)
    batch = _batch(model_config, args.ids, args.per_id, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(args.warmup + args.steps):
        sync()
        started = time.perf_counter()
        loss = image_step(model, batch, text, config, autocast)["loss"]
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    images = 3 * args.ids * args.per_id
    seconds = float(np.median(times))
    return {"images_per_step": images, "seconds_per_step": round(seconds, 4),
            "images_per_second": round(images / seconds, 2)}


def augment_throughput(args: argparse.Namespace) -> dict[str, float]:
    """Decode + augment rate of one data-loading worker (one thread; JPEG files at the model's size)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = CSDNConfig.rn50()
    augment = TrainAugment(config, TrainConfig())
    height, width = config.image_size
    count = args.ids * args.per_id
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(count):
            pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
            paths.append(Path(folder) / f"{index}.jpg")
            Image.fromarray(pixels).save(paths[-1], quality=90)
        started = time.perf_counter()
        for index, path in enumerate(paths):
            pixels = augment.resized(str(path))
            for view in ("visible", "exchange"):
                augment(pixels, view, np.random.default_rng(index))
            augment(augment.resized(str(path)), "infrared", np.random.default_rng(index))
        seconds = time.perf_counter() - started
    torch.set_num_threads(threads)
    return {"augmented_images_per_worker_second": round(3 * count / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--ids", type=int, default=8, help="identities per batch (P)")
    parser.add_argument("--per-id", type=int, default=4, help="images per identity and modality (K)")
    parser.add_argument("--classes", type=int, default=395, help="identities in the classifier (SYSU-MM01: 395)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--augment", action="store_true", help="also time CPU decode + augmentation")
    parser.add_argument("--augment-only", action="store_true", help="only time decode + augmentation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"device": args.device, "precision": args.precision, "threads": torch.get_num_threads(),
              "torch": torch.__version__}
    if not args.augment_only:
        result.update(train_throughput(args))
    if args.augment or args.augment_only:
        result.update(augment_throughput(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
