"""Benchmark ``embed_image`` for CSDN-RN50 at 288x144 with flip TTA, against the authors' way and the CPU's limit.

Four ways to embed the same preprocessed images (decoding excluded from all four):

(a) naive      one image at a time, the flipped copy as a second forward, plain modules;
(b) authors    the authors' test loop (core/test.py at nengdong96/CSDN 2224959): batches of
               ``--authors-batch-size`` (128, their test loaders' batch), one forward, then a
               second forward on the flipped batch, plain modules (CLIP's full attention pool);
(c) exact      ``model.embed_image(..., precision="fp32")``: folded tower, channels-last,
               flipped copy in the same forward, single-query attention pool;
(d) bf16       ``model.embed_image(..., precision="bf16")``.

Timing is interleaved: each round runs all four once (in a rotating order), so
load from other processes hits them alike; images/s is the median over rounds and
each speed-up is the median of its per-round ratios. FLOP per image is counted with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products), and
achieved GFLOP/s is compared with a 2048^3 matrix product measured in the same run,
in the matching precision. Finally bf16 is compared with fp32 on a synthetic
query/gallery set: per-embedding cosine and rank-1 agreement.

Weights are random (BatchNorm statistics calibrated on synthetic images, so that
activations have a trained network's scale) unless ``--weights`` names CLIP weights
(``RN50`` downloads OpenAI's; or a local file): speed does not depend on the
weights, precision agreement somewhat does.

    python benchmarks/bench_embed.py                  # ~3-5 minutes on 2 cores
    python benchmarks/bench_embed.py --batches 1 --rounds 2 --agreement-ids 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, register_flop_formula

from csdn import CSDNConfig
from csdn.inference.fast import inference_features
from csdn.model.network import CSDN

MODALITY = "visible"
METHODS = ("naive", "authors", "exact", "bf16")


# ---------------------------------------------------------------- the model and the four ways


@torch.no_grad()
def build_model(weights: str | None, seed: int) -> CSDN:
    """Full-size CSDN-RN50 in eval mode: CLIP weights, or random ones with calibrated BatchNorms.

    A freshly initialised network has BatchNorm statistics (0, 1) that do not match
    its activations, so these grow layer after layer; a trained network's statistics
    match its data. Random BatchNorm affines plus statistics measured on synthetic
    images give activations of a trained network's scale, which is what the
    bf16-vs-fp32 agreement depends on.
    """
    if weights:
        from csdn.hub.clip import from_clip

        return from_clip(weights, progress=True).eval()
    torch.manual_seed(seed)
    model = CSDN(CSDNConfig.rn50())
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.1)
            module.reset_running_stats()
            module.momentum = None  # running statistics = plain average over the calibration batch
    for name, param in model.trunk.named_parameters():
        if name.endswith("bn3.weight"):  # residual branches start small, as in trained ResNets
            param.uniform_(0.1, 0.5)
    gallery, query = synthetic_reid_set(8, model.config.image_size, seed + 1000)
    model.train().forward_train(visible=torch.cat([gallery, query]))
    return model.eval()


def authors_features(model: CSDN, x: torch.Tensor) -> torch.Tensor:
    """f(x) as the authors' code computes it: plain stem and trunk, CLIP's full attention pool."""
    fmap = model.trunk(model.stem_visible(x))
    gem = model.gem_head.bn(model.gem_head.gem(fmap))
    return torch.cat([F.normalize(gem, dim=1), F.normalize(model.attnpool(fmap), dim=1)], dim=1)


def authors_embed(model: CSDN, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Batches of ``batch_size``: a forward, then a second forward on the flipped batch."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            out.append(
                F.normalize(torch.cat([authors_features(model, x), authors_features(model, x.flip(3))], 1), dim=1)
            )
    return torch.cat(out)


def naive_embed(model: CSDN, images: torch.Tensor) -> torch.Tensor:
    return authors_embed(model, images, batch_size=1)


def ours(precision: str) -> Callable[[CSDN, torch.Tensor, int], torch.Tensor]:
    def embed(model: CSDN, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        return model.embed_image(images, MODALITY, batch_size=batch_size, precision=precision)

    return embed


# ---------------------------------------------------------------- measurements


def gemm_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` throughput of one ``size``^3 matrix product: the arithmetic limit."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@register_flop_formula(torch.ops.mkldnn._convolution_pointwise)
def _fused_conv_flop(x_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOP of oneDNN's fused convolutions (``.default``: X, W, ...; ``.binary``: X, other, W, ...)."""
    w_shape = args[1] if len(args) > 9 else args[0]
    return conv_flop_count(x_shape, w_shape, out_shape)


def count_gflop_per_image(model: CSDN, image: torch.Tensor) -> dict[str, float]:
    """Counted GFLOP for one image with its flipped copy: plain modules vs the fast path."""
    image = image.unsqueeze(0)
    counts = {}
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        authors_features(model, image)  # math attention, so the counter sees its matrix products
        authors_features(model, image.flip(3))
    counts["plain"] = counter.get_total_flops() / 1e9
    with FlopCounterMode(display=False) as counter:
        inference_features(model, torch.cat([image, image.flip(3)]), MODALITY)
    counts["fast"] = counter.get_total_flops() / 1e9
    return counts


def time_methods(model: CSDN, images: torch.Tensor, args: argparse.Namespace) -> dict[str, list[float]]:
    """Images/s of each way per round, interleaved; also the GEMM peaks per round."""
    naive_images = images[: args.naive_images]
    runs = {
        "naive": lambda: naive_embed(model, naive_images),
        "authors": lambda: authors_embed(model, images, args.authors_batch_size),
        "exact": lambda: ours("fp32")(model, images, args.batch_size),
        "bf16": lambda: ours("bf16")(model, images, args.batch_size),
    }
    counts = {"naive": len(naive_images), "authors": len(images), "exact": len(images), "bf16": len(images)}
    warm = images[: args.batch_size]
    _log("warm-up")
    naive_embed(model, warm[:1])
    authors_embed(model, images[: args.authors_batch_size], args.authors_batch_size)
    for precision in ("fp32", "bf16"):
        ours(precision)(model, warm, args.batch_size)
    rates: dict[str, list[float]] = {name: [] for name in (*METHODS, "gemm_fp32", "gemm_bf16")}
    for round_index in range(args.rounds):
        order = METHODS[round_index % len(METHODS) :] + METHODS[: round_index % len(METHODS)]
        for name in order:
            rates[name].append(counts[name] / _seconds(runs[name]))
        rates["gemm_fp32"].append(gemm_gflops(torch.float32))
        rates["gemm_bf16"].append(gemm_gflops(torch.bfloat16))
        _log(
            f"round {round_index + 1}/{args.rounds}: "
            + ", ".join(f"{n} {rates[n][-1]:.2f}" for n in METHODS)
            + " img/s"
        )
    return rates


def synthetic_reid_set(identities: int, size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gallery and query images of ``identities`` people: a shared smooth pattern per identity,
    plus independent per-image variation strong enough that ranking is not trivial."""
    gen = torch.Generator().manual_seed(seed)

    def smooth(count: int, grid: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(
            torch.randn(count, 3, *grid, generator=gen), size=size, mode="bilinear", align_corners=False
        )

    base = smooth(identities, (9, 5)) + 0.5 * smooth(identities, (36, 18))
    gallery = base + 0.6 * smooth(identities, (18, 9)) + 0.2 * torch.randn(identities, 3, *size, generator=gen)
    query = base + 0.6 * smooth(identities, (18, 9)) + 0.2 * torch.randn(identities, 3, *size, generator=gen)
    return gallery, query


def bf16_agreement(model: CSDN, identities: int, batch_size: int, seed: int) -> dict[str, float]:
    gallery, query = synthetic_reid_set(identities, model.config.image_size, seed)
    emb = {}
    for precision in ("fp32", "bf16"):
        both = model.embed_image(torch.cat([gallery, query]), MODALITY, batch_size=batch_size, precision=precision)
        emb[precision] = (both[:identities], both[identities:])
    cosine = torch.cat([(emb["bf16"][i] * emb["fp32"][i]).sum(1) for i in range(2)])
    scores = {p: emb[p][1] @ emb[p][0].T for p in emb}
    top1 = {p: scores[p].argmax(1) for p in emb}
    best_two = scores["fp32"].topk(2, dim=1).values
    differ = top1["bf16"] != top1["fp32"]
    truth = torch.arange(identities)
    return {
        "cosine_min": cosine.min().item(),
        "cosine_mean": cosine.mean().item(),
        "rank1_agreement": 1.0 - differ.float().mean().item(),
        # how close to a tie (fp32 top-1 minus top-2 score) the queries were whose top-1 changed
        "disagreement_max_margin": (best_two[:, 0] - best_two[:, 1])[differ].max().item() if differ.any() else 0.0,
        "median_margin": (best_two[:, 0] - best_two[:, 1]).median().item(),
        "rank1_fp32": (top1["fp32"] == truth).float().mean().item(),
        "rank1_bf16": (top1["bf16"] == truth).float().mean().item(),
        "images": 2 * identities,
    }


# ---------------------------------------------------------------- report


def summarise(rates: dict[str, list[float]], flops: dict[str, float]) -> dict[str, object]:
    median = {name: statistics.median(values) for name, values in rates.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    gflop = {"naive": flops["plain"], "authors": flops["plain"], "exact": flops["fast"], "bf16": flops["fast"]}
    rows = {}
    for name in METHODS:
        peak = median["gemm_bf16" if name == "bf16" else "gemm_fp32"]
        achieved = median[name] * gflop[name]
        rows[name] = {
            "images_per_s": median[name],
            "vs_authors": ratio(name, "authors"),
            "vs_naive": ratio(name, "naive"),
            "gflop_per_image": gflop[name],
            "gflop_per_s": achieved,
            "fraction_of_gemm_peak": achieved / peak,
        }
    return {"methods": rows, "gemm_gflops": {"fp32": median["gemm_fp32"], "bf16": median["gemm_bf16"]}, "rounds": rates}


def print_report(summary: dict, agreement: dict | None, args: argparse.Namespace) -> None:
    peaks = summary["gemm_gflops"]
    print(
        f"\nCSDN-RN50 288x144, flip TTA, batch {args.batch_size} (authors' path {args.authors_batch_size}), "
        f"{args.batches} batch(es), "
        f"{args.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"2048^3 matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    print(f"{'method':<9}{'img/s':>8}{'x authors':>11}{'x naive':>9}{'GFLOP/img':>11}{'GFLOP/s':>9}{'of peak':>9}")
    for name, row in summary["methods"].items():
        print(
            f"{name:<9}{row['images_per_s']:>8.2f}{row['vs_authors']:>11.2f}{row['vs_naive']:>9.2f}"
            f"{row['gflop_per_image']:>11.2f}{row['gflop_per_s']:>9.0f}{row['fraction_of_gemm_peak']:>9.0%}"
        )
    if agreement:
        print(
            f"\nbf16 vs fp32 on {agreement['images']} synthetic images "
            f"({agreement['images'] // 2} identities, query vs gallery):"
        )
        print(f"  cosine to the fp32 embedding: min {agreement['cosine_min']:.5f}, mean {agreement['cosine_mean']:.5f}")
        print(
            f"  rank-1 agreement {agreement['rank1_agreement']:.1%}; rank-1 accuracy fp32 "
            f"{agreement['rank1_fp32']:.1%}, bf16 {agreement['rank1_bf16']:.1%}"
        )
        print(
            f"  queries whose top-1 changed had fp32 top-1/top-2 score gaps <= "
            f"{agreement['disagreement_max_margin']:.5f} (median gap of all queries {agreement['median_margin']:.5f})"
        )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_json(path: Path, data: dict) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=4, help="batches of --batch-size images per timed run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--authors-batch-size", type=int, default=128, help="the authors' test batch (their query/gallery loaders: 128)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--naive-images", type=int, default=8, help="images the one-at-a-time way embeds per round")
    parser.add_argument("--agreement-ids", type=int, default=128, help="identities in the bf16 agreement set (0: skip)")
    parser.add_argument("--weights", default=None, help="CLIP weights ('RN50' or a file) instead of random ones")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if min(args.batches, args.batch_size, args.rounds, args.naive_images) < 1:
        parser.error("--batches, --batch-size, --rounds and --naive-images must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.weights, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batches * args.batch_size, 3, *model.config.image_size, generator=gen)
    flops = count_gflop_per_image(model, images[0])
    summary = summarise(time_methods(model, images, args), flops)
    agreement = None
    if args.agreement_ids:
        _log("bf16 agreement")
        agreement = bf16_agreement(model, args.agreement_ids, args.batch_size, args.seed + 1)
    print_report(summary, agreement, args)
    result = {**summary, "bf16_agreement": agreement, "settings": vars(args) | {"json": str(args.json)}}
    if args.json:
        _write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
