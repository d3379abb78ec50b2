"""Stage-3 training step: this project's against a re-statement of the CSDN authors' step.

One step = P identities x K images per modality: 2*P*K visible views (plain +
channel-exchanged) and P*K infrared images forward, every stage-3 loss, backward,
Adam. Two implementations of that step, from the same weights on the same batch:

csdn     ``csdn.train.stages.image_step`` + ``make_optimizer`` (``recipe="reference"``):
         channels-last tower with ``csdn.model.batchnorm``, single-query attention pool, GeM
         with a hand-written backward, fused Adam; also under bfloat16 autocast where the CPU
         has native bf16 instructions;
authors  the authors' ``core/train.py::train`` step re-stated here (repo
         nengdong96/CSDN at commit 2224959): each modality through its own stem,
         concatenated, shared trunk, CLIP's attention pool called as a module (all 163
         queries, the first kept), GeM + BN + classifier head, BN + classifier on the
         projection; their loss (CE + CE + MSEL(4) on the GeM features and on the
         projections of visible view 1 and infrared + 0.15 x their WRT triplet on both
         features + 0.05 / 0.1 x CE of visible view-1 / infrared projections against
         the text classifier); Adam with
         L2 weight decay 5e-4 and one parameter group per parameter, at twice the rate
         for every parameter whose name contains "classifier".

Before timing, one step of each from identical copies checks that they compute the
same thing: every loss term, every gradient and the parameter update after Adam, next
to the authors' step run on the same images in another row order (what reordering the
batch sums alone moves; see ``compare_one_step``) and, with ``--float64``, next to the
authors' step in float64 (what float32 rounding moves in all: the gradients' yardstick).
The bf16 side's loss is compared with fp32's on the same weights and batch. Timing then alternates the sides round by round (rotating
which goes first), so load from other processes hits them alike; images/s is the
median over rounds and each speed-up the median of the per-round ratios. Weights and
inputs are random: speed does not depend on them.

    python benchmarks/bench_train.py --size small              # smoke test, ~20 s on 2 cores
    python benchmarks/bench_train.py --size full --rounds 3    # RN50 at 288x144, 96 images/step: ~8 min

The full size holds three copies of the model and peaks near 14 GB of memory.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from csdn import CSDN, CSDNConfig
from csdn.train import TrainConfig
from csdn.train.stages import autocast_factory, image_step, make_optimizer

BASE_LR = 3e-4
SIZES = {  # model config, identities per batch (P), images per identity and modality (K)
    "full": (CSDNConfig.rn50(num_classes=395), 8, 4),
    "small": (CSDNConfig.rn50(num_classes=395, image_size=(96, 48)), 2, 4),  # K=4: their MSEL(4) needs 4 per id
}


# ---------------------------------------------------------------- the machine


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Native bfloat16 instructions (x86 AVX512-BF16 / AMX, Arm BF16): without them bf16 is emulated and slow."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) and torch.backends.mkldnn.is_available()


# ---------------------------------------------------------------- the authors' step, re-stated


class AuthorsGeMHead(nn.Module):
    """Their ``Classifier``: GeM (trainable p) -> BatchNorm1d on the squeezed features -> bias-free linear."""

    def __init__(self, gem: nn.Module, bn: nn.BatchNorm1d, classifier: nn.Linear):
        super().__init__()
        self.GEM, self.BN, self.classifier = gem, bn, classifier  # their attribute names

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, eps = self.GEM.p, self.GEM.eps
        pooled = F.adaptive_avg_pool2d(fmap.clamp(min=eps).pow(p), 1).pow(1.0 / p)  # [N, C, 1, 1]
        return pooled, self.classifier(self.BN(pooled.squeeze()))


class AuthorsProjectionHead(nn.Module):
    """Their ``Classifier2``: BatchNorm1d -> bias-free linear on the projection."""

    def __init__(self, bn: nn.BatchNorm1d, classifier: nn.Linear):
        super().__init__()
        self.BN, self.classifier = bn, classifier

    def forward(self, projection: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.BN(projection.squeeze()))


class AuthorsImageModel(nn.Module):
    """The image side of their ``Model`` (the text side is frozen in stage 3), built around
    ``source``'s own modules so both sides start from the same weights. Attribute names are
    theirs, because their optimiser decides learning rates by parameter name."""

    def __init__(self, source: CSDN):
        super().__init__()

        def stem(s):  # conv1 bn1 conv2 bn2 conv3 bn3, a single ReLU, 2x2 average pool
            return nn.Sequential(s.conv1, s.bn1, s.conv2, s.bn2, s.conv3, s.bn3, nn.ReLU(inplace=True), s.pool)

        self.image_encoder1 = stem(source.stem_visible)
        self.image_encoder2 = stem(source.stem_infrared)
        trunk = source.trunk
        self.image_encoder = nn.Sequential(trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4)
        self.attnpool = source.attnpool  # CLIP's AttentionPool2d
        self.classifier = AuthorsGeMHead(source.gem_head.gem, source.gem_head.bn, source.gem_head.classifier)
        self.classifier2 = AuthorsProjectionHead(source.proj_head.bn, source.proj_head.classifier)

    def forward(self, visible: torch.Tensor, infrared: torch.Tensor):
        maps = torch.cat([self.image_encoder1(visible), self.image_encoder2(infrared)])
        maps = self.image_encoder(maps)
        projection = self.attnpool(maps)
        gem, gem_logits = self.classifier(maps)
        return (gem, projection), (gem_logits, self.classifier2(projection))


def authors_triplet(features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Their ``TripletLoss_WRT``: distances from expanded squares (clamped at 1e-12, square
    root), softmax weights whose shift is the row max of ``dist * mask`` (masked-out zeros
    included) with a 1e-6 guard in the denominator, and a soft-margin ranking loss."""
    squares = features.pow(2).sum(dim=1, keepdim=True)
    dist = (squares + squares.t()).addmm(features, features.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()
    positive = pids[None, :].eq(pids[:, None]).float()
    negative = pids[None, :].ne(pids[:, None]).float()

    def weights(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shifted = torch.exp(d - (d * mask).max(dim=1, keepdim=True).values) * mask
        return shifted / (shifted.sum(dim=1, keepdim=True) + 1e-6)

    dist_ap, dist_an = dist * positive, dist * negative
    furthest_positive = (dist_ap * weights(dist_ap, positive)).sum(dim=1)
    closest_negative = (dist_an * weights(-dist_an, negative)).sum(dim=1)
    return F.soft_margin_loss(closest_negative - furthest_positive, torch.ones_like(closest_negative))


def authors_msel(features: torch.Tensor, pids: torch.Tensor, num_pos: int = 4) -> torch.Tensor:
    """Their ``MSEL(4)`` (tools/MSEL.py): rows [visible; infrared] with one identity sequence. Per
    modality, the mean of the ``num_pos - 1`` largest same-identity distances (zeros elsewhere) is
    compared with the mean cross-modality same-identity distance; the squared gaps are averaged."""
    n = len(features) // 2
    squares = features.pow(2).sum(dim=1, keepdim=True)
    dist = (squares + squares.t()).addmm(features, features.t(), beta=1, alpha=-2).clamp(min=1e-12).sqrt()
    same = pids[:n][None, :].eq(pids[:n][:, None])
    gaps = []
    for own, other in ((slice(0, n), slice(n, 2 * n)), (slice(n, 2 * n), slice(0, n))):
        intra = (same * dist[own, own]).topk(num_pos - 1, dim=1, largest=True, sorted=False).values.mean(dim=1)
        cross = dist[own, other][same].view(n, -1).mean(dim=1)
        gaps.append((cross - intra).pow(2).mean())
    return (gaps[0] + gaps[1]) / 2


def authors_losses(
    net: AuthorsImageModel, batch: dict[str, torch.Tensor], text: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The loss of their stage-3 step (MSEL at weight 1, lambda1=0.15, lambda2=0.05, lambda3=0.1), term by term."""
    labels = batch["labels"]
    n = labels.shape[0]
    (gem, projection), (gem_logits, proj_logits) = net(
        torch.cat([batch["visible"], batch["exchange"]]), batch["infrared"]
    )
    pids = torch.cat([labels, labels, labels])
    first_view_and_infrared = torch.cat([torch.arange(n), torch.arange(2 * n, 3 * n)])
    paired = torch.cat([labels, labels])
    parts = {
        "id": F.cross_entropy(gem_logits, pids) + F.cross_entropy(proj_logits, pids),
        "msel": authors_msel(gem.squeeze()[first_view_and_infrared], paired)
        + authors_msel(projection[first_view_and_infrared], paired),
        "triplet": authors_triplet(gem.squeeze(), pids) + authors_triplet(projection.squeeze(), pids),
        "i2t_visible": F.cross_entropy(projection[:n] @ text.t(), labels),
        "i2t_infrared": F.cross_entropy(projection[2 * n :] @ text.t(), labels),
    }
    total = (
        parts["id"]
        + parts["msel"]
        + 0.15 * parts["triplet"]
        + 0.05 * parts["i2t_visible"]
        + 0.1 * parts["i2t_infrared"]
    )
    return {"loss": total, **parts}


def authors_optimizer(net: AuthorsImageModel) -> torch.optim.Adam:
    """Their stage-3 Adam: one group per parameter, lr x2 where the name contains "classifier"."""
    groups = [
        {"params": [param], "lr": BASE_LR * (2 if "classifier" in name else 1), "weight_decay": 5e-4}
        for name, param in net.named_parameters()
    ]
    return torch.optim.Adam(groups)


# ---------------------------------------------------------------- the two sides


@torch.no_grad()
def build_model(model_config: CSDNConfig, seed: int) -> CSDN:
    """Random weights; BatchNorm affines and pool biases drawn too (the defaults zero some), so that
    every parameter gets a gradient. Residual branches start small (last BatchNorm ~0.2), as with
    CLIP's initialisation, which zeroes them: a deep BatchNorm network with full-size random
    branches has gradients so ill-conditioned that float32 rounding alone moves them by percents."""
    torch.manual_seed(seed)
    model = CSDN(model_config).train()
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            scale = 0.2 if name.startswith("trunk") and name.endswith("bn3") else 1.0
            module.weight.copy_(scale * (0.8 + 0.4 * torch.rand(module.num_features, generator=gen)))
            module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    pool = model.attnpool
    for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
        proj.bias.copy_(torch.randn(proj.bias.shape, generator=gen) * 0.1)
    return model


def make_batch(model_config: CSDNConfig, ids: int, per_id: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (ids * per_id, 3, *model_config.image_size)
    batch = {view: torch.randn(shape, generator=gen) for view in ("visible", "exchange", "infrared")}
    batch["labels"] = torch.arange(ids).repeat_interleave(per_id)
    return batch


class Side:
    """One way to run the step: ``run()`` does zero_grad, forward, loss, backward and Adam's step."""

    def __init__(
        self,
        name: str,
        losses: Callable[[], dict[str, torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        named_parameters: dict[str, nn.Parameter],
    ):
        self.name, self.losses, self.optimizer, self.parameters = name, losses, optimizer, named_parameters

    def run(self) -> dict[str, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.losses()
        losses["loss"].backward()
        self.optimizer.step()
        return losses


def build_sides(
    model_config: CSDNConfig,
    ids: int,
    per_id: int,
    text: torch.Tensor,
    batch: dict[str, torch.Tensor],
    seed: int,
    bf16: bool,
) -> tuple[list[Side], Side, CSDN, TrainConfig]:
    """The timed sides (csdn fp32, authors fp32, csdn bf16) and the rounding-floor side of the check."""
    model = build_model(model_config, seed)
    config = TrainConfig(recipe="reference", ids_per_batch=ids, images_per_id=per_id)
    optimizer = make_optimizer(model, 3, config, frozen=set())
    for group in optimizer.param_groups:
        group["lr"] = BASE_LR * group.get("lr_factor", 1.0)
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def authors_side(name: str, images: dict[str, torch.Tensor]) -> Side:
        twin = copy.deepcopy(model)  # the authors' net is assembled from a twin's modules: same weights
        net = AuthorsImageModel(twin)
        our_name = {id(p): name for name, p in twin.named_parameters()}
        return Side(
            name,
            lambda: authors_losses(net, images, text),
            authors_optimizer(net),
            {our_name[id(p)]: p for p in net.parameters()},
        )

    fp32, bf16_autocast = autocast_factory("fp32", torch.device("cpu")), autocast_factory("bf16", torch.device("cpu"))
    sides = [
        Side("csdn fp32", lambda: image_step(model, batch, text, config, fp32), optimizer, trained),
        authors_side("authors fp32", batch),
    ]
    if bf16:
        sides.append(
            Side("csdn bf16", lambda: image_step(model, batch, text, config, bf16_autocast), optimizer, trained)
        )
    order = torch.randperm(len(batch["labels"]), generator=torch.Generator().manual_seed(seed + 1))
    reordered = {key: value[order] for key, value in batch.items()}  # the same loss, summed in another order
    return sides, authors_side("authors fp32, rows reordered", reordered), model, config


# ---------------------------------------------------------------- checks and timing


EXACTLY_ZERO_GRADIENT = "attnpool.k_proj.bias"  # cancels in the pool's softmax: rounding noise on every side


def step_differences(side: Side, reference: Side, before: dict[str, torch.Tensor]) -> dict:
    """Gradients and Adam updates of ``side`` against ``reference`` after one step from ``before``.

    The worst single tensor is searched among those whose gradient is not zero in exact
    arithmetic: for the pool's key bias both sides hold rounding noise, noise / noise ~ 1.
    """
    lr = {id(p): group["lr"] for group in reference.optimizer.param_groups for p in group["params"]}
    gap_sq, norm_sq, worst, worst_name, off, total = 0.0, 0.0, 0.0, "", 0, 0
    for name, mine in side.parameters.items():
        other = reference.parameters[name]
        if mine.grad is None or other.grad is None:
            raise SystemExit(f"{name} got no gradient on one side")
        gap, norm = float((mine.grad - other.grad).norm()), float(other.grad.norm())
        gap_sq, norm_sq = gap_sq + gap**2, norm_sq + norm**2
        if gap > worst * norm and norm > 0 and name != EXACTLY_ZERO_GRADIENT:
            worst, worst_name = gap / norm, name
        step_gap = ((mine.detach() - before[name]) - (other.detach() - before[name])).abs() / lr[id(other)]
        off += int((step_gap > 1e-2).sum())
        total += step_gap.numel()
    return {
        "grad_rel_diff": (gap_sq / norm_sq) ** 0.5,
        "worst_tensor_grad_rel_diff": worst,
        "worst_tensor": worst_name,
        "update_elements_off_by_1pct_lr": off,
        "update_elements": total,
    }


def float64_side(model: CSDN, batch: dict[str, torch.Tensor], text: torch.Tensor) -> Side:
    """The authors' step in float64 from ``model``'s weights: close to exact arithmetic, the yardstick
    that shows how far float32 rounding moves each float32 side (the rows-reordered floor only
    moves the batch sums; this also moves every convolution's rounding, which is larger)."""
    twin = copy.deepcopy(model).double()
    net = AuthorsImageModel(twin)
    our_name = {id(p): name for name, p in twin.named_parameters()}
    wide = {key: value.double() if value.is_floating_point() else value for key, value in batch.items()}
    return Side(
        "authors float64",
        lambda: authors_losses(net, wide, text.double()),
        authors_optimizer(net),
        {our_name[id(p)]: p for p in net.parameters()},
    )


def compare_one_step(ours: Side, theirs: Side, floor: Side, truth: Side | None = None) -> dict:
    """One step of each from the same weights: loss terms, gradients and Adam's update.

    ``floor`` is the authors' step once more, on the same images with their rows (and
    labels) reordered alike: the same loss in exact arithmetic, with every batch sum taken
    in another order. Its distance from ``theirs`` is what float32 rounding alone moves,
    and is the yardstick for the csdn-vs-authors distance: with random weights a deep
    BatchNorm network's gradients are ill-conditioned (and the authors' triplet takes the
    square root of each sample's rounding-noise distance to itself), so rounding moves
    them by far more than 1e-7.
    """
    if set(ours.parameters) != set(theirs.parameters):
        raise SystemExit(
            f"the two sides train different parameters: {sorted(set(ours.parameters) ^ set(theirs.parameters))}"
        )
    before = {name: p.detach().clone() for name, p in ours.parameters.items()}
    for side in (theirs, floor):
        for name, p in side.parameters.items():
            if not torch.equal(p, before[name]):
                raise SystemExit(f"{name} does not start from the same weights on both sides")
    our_losses, their_losses, floor_losses = ours.run(), theirs.run(), floor.run()
    distances = {}
    if truth is not None:
        truth.run()
        distances = {
            "csdn_vs_float64": step_differences(ours, truth, before),
            "authors_vs_float64": step_differences(theirs, truth, before),
        }
    losses = {}
    for key in their_losses:
        mine, other, rounded = (float(found[key].detach()) for found in (our_losses, their_losses, floor_losses))
        losses[key] = {
            "csdn": mine,
            "authors": other,
            "rel_diff": abs(mine - other) / abs(other),
            "floor_rel_diff": abs(rounded - other) / abs(other),
        }
    return {
        "losses": losses,
        "csdn_vs_authors": step_differences(ours, theirs, before),
        "floor_vs_authors": step_differences(floor, theirs, before),
        "csdn_vs_floor": step_differences(ours, floor, before),
        **distances,
    }


def timed_rounds(sides: list[Side], rounds: int, images: int) -> dict:
    """Alternate the sides, rotating which goes first each round; seconds per step per side and round."""
    seconds: dict[str, list[float]] = {side.name: [] for side in sides}
    for index in range(rounds):
        order = sides[index % len(sides) :] + sides[: index % len(sides)]
        for side in order:
            started = time.perf_counter()
            side.run()
            seconds[side.name].append(time.perf_counter() - started)
        print(
            f"  round {index + 1}: " + ", ".join(f"{name} {times[-1]:.2f} s" for name, times in seconds.items()),
            flush=True,
        )
    authors, ours = seconds["authors fp32"], seconds["csdn fp32"]
    return {
        name: {
            "images_per_second": round(images / statistics.median(times), 3),
            "seconds_per_step": [round(t, 3) for t in times],
            "speedup_vs_authors": round(statistics.median(a / t for a, t in zip(authors, times)), 3),
            "speedup_vs_csdn_fp32": round(statistics.median(a / t for a, t in zip(ours, times)), 3),
        }
        for name, times in seconds.items()
    }


def augment_throughput(ids: int, per_id: int) -> float:
    """Decode + augment rate of one data-loading worker (one thread; JPEG files at the model's size)."""
    from PIL import Image

    from csdn.train.augment import TrainAugment

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = CSDNConfig.rn50()
    augment = TrainAugment(config, TrainConfig())
    height, width = config.image_size
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(ids * per_id):
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
    return 3 * len(paths) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="full",
        help="full: RN50 at 288x144, 8 ids x 4 images (96 images/step); small: 96x48, 4 x 2",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default: 3 full, 5 small)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast side")
    parser.add_argument("--augment", action="store_true", help="also time CPU decode + augmentation per worker")
    parser.add_argument(
        "--float64",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the authors' step in float64 as the exact-arithmetic yardstick "
        "(default: on for small; on full it adds ~4 minutes and ~10 GB, peaking near 24 GB)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.size == "full" else 5)
    if args.float64 is None:
        args.float64 = args.size == "small"
    model_config, ids, per_id = SIZES[args.size]
    bf16 = cpu_has_bf16() and not args.no_bf16
    images = 3 * ids * per_id
    height, width = model_config.image_size
    print(
        f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"native bf16: {cpu_has_bf16()}"
    )
    print(f"size {args.size}: {images} images/step at {height}x{width} ({ids} ids x {per_id} images x 3 views)")

    torch.manual_seed(args.seed + 1)
    text = torch.randn(model_config.num_classes, model_config.embed_dim) * 0.05
    batch = make_batch(model_config, ids, per_id, args.seed + 2)
    sides, floor, model, config = build_sides(model_config, ids, per_id, text, batch, args.seed, bf16)
    result: dict = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": args.size,
        "images_per_step": images,
        "recipe": config.recipe,
    }

    if bf16:  # bf16 vs fp32 loss on the same weights and batch (a copy: forward only)
        probe = copy.deepcopy(model)
        with torch.no_grad():
            fp32_loss = image_step(probe, batch, text, config, contextlib.nullcontext)
            bf16_loss = image_step(probe, batch, text, config, autocast_factory("bf16", torch.device("cpu")))
        result["bf16_vs_fp32_loss"] = {
            key: {"fp32": float(fp32_loss[key]), "bf16": float(bf16_loss[key])} for key in fp32_loss
        }
        del probe
        print(
            "bf16 vs fp32 loss, same weights and batch: "
            + ", ".join(f"{key} {v['bf16']:.5f} vs {v['fp32']:.5f}" for key, v in result["bf16_vs_fp32_loss"].items())
        )

    truth = float64_side(model, batch, text) if args.float64 else None
    check = compare_one_step(sides[0], sides[1], floor, truth)  # also the first (untimed) step of both fp32 sides
    del floor, truth
    result["agreement"] = check
    print("one step from the same weights, csdn vs authors:")
    for key, value in check["losses"].items():
        print(
            f"  {key:13s} {value['csdn']:.7f} vs {value['authors']:.7f} (rel. diff {value['rel_diff']:.1e}; "
            f"authors, rows reordered: {value['floor_rel_diff']:.1e})"
        )
    print("  gradients (relative difference of all of them; worst single tensor) and Adam updates:")
    for label, key in (
        ("csdn vs authors", "csdn_vs_authors"),
        ("authors rows reordered vs authors (rounding floor)", "floor_vs_authors"),
        ("csdn vs authors rows reordered", "csdn_vs_floor"),
        ("csdn vs the authors' step in float64", "csdn_vs_float64"),
        ("authors vs the authors' step in float64", "authors_vs_float64"),
    ):
        if key not in check:
            continue
        d = check[key]
        print(
            f"    {label}: {d['grad_rel_diff']:.1e}; {d['worst_tensor_grad_rel_diff']:.1e} ({d['worst_tensor']}); "
            f"{d['update_elements_off_by_1pct_lr']} of {d['update_elements']} update elements differ by > 0.01 lr"
        )
    if bf16:
        sides[2].run()  # untimed first bf16 step

    print(f"timing {rounds} rounds, sides alternating:")
    result["timing"] = timed_rounds(sides, rounds, images)
    for name, timing in result["timing"].items():
        print(
            f"  {name:13s} {timing['images_per_second']:7.2f} images/s  "
            f"({timing['speedup_vs_authors']:.2f}x the authors' step, {timing['speedup_vs_csdn_fp32']:.2f}x csdn fp32)"
        )
    if args.augment:
        result["augmented_images_per_worker_second"] = round(augment_throughput(ids, per_id), 1)
        print(f"decode + augment: {result['augmented_images_per_worker_second']} images/s per worker")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({name: timing["images_per_second"] for name, timing in result["timing"].items()}))


if __name__ == "__main__":
    main()
