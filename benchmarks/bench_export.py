"""Exported CSDN-RN50 against exact fp32 PyTorch: images/s per backend and precision, and agreement.

Full CSDN-RN50 at 288x144, flip TTA on, batch 32, preprocessed images (decoding excluded
everywhere), all in one run:

  torch-fp32     ``model.embed_image(..., precision="fp32")`` (the exact folded PyTorch path)
  ort-fp32       ONNX Runtime, the exported float32 graph
  openvino-fp32  OpenVINO, the same graph converted (when ``openvino`` is installed)
  ort-int8       ONNX Runtime, static int8 (QDQ, per-channel weights, calibrated on synthetic pedestrians)
  openvino-int8  OpenVINO running that int8 graph

Timing is interleaved: each round runs every way once, in a rotating order, so load from
other processes hits them alike; images/s is the median over rounds, and each ratio the
median of its per-round ratios against torch-fp32.

Agreement (int8 vs exact fp32): ``--identities`` synthetic people rendered twice (gallery,
query, same modality), embedded by torch-fp32 once and by each int8 backend; the smallest
cosine between an int8 embedding and its fp32 twin, the share of queries with the same top-1
gallery match, and how close to a tie the fp32 scores were for the queries whose top-1 changed.

The RN50's weights are random (BatchNorm statistics calibrated on synthetic images, as in
``bench_embed.py``): speed does not depend on the weights, agreement somewhat does. So the
bundled, trained ``synthetic-tiny`` model is measured too: int8 vs fp32 on the SYSU-MM01
protocol (all-search, single-shot, 10 trials) on a held-out synthetic SYSU tree, and its
int8 agreement on ``--identities`` people in each modality.

    python benchmarks/bench_export.py                       # ~15 minutes on 2 cores
    python benchmarks/bench_export.py --rounds 1 --identities 50 --skip-bundled
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import csdn
from csdn.export import Floors, export_model
from csdn.export.samples import synthetic_people
from csdn.export.verify import embedding_agreement, preprocessed
from csdn.runtime import ExportedEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import build_model  # noqa: E402  (the calibrated random-weight RN50)

MODALITY = "visible"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def export_all(model, folder: Path) -> dict[str, ExportedEmbedder]:
    """Export the visible graph in each available backend and precision; returns their embedders."""
    wanted = [("ort-fp32", "onnx", "fp32"), ("ort-int8", "onnx", "int8")]
    if have("openvino"):
        wanted += [("openvino-fp32", "openvino", "fp32"), ("openvino-int8", "openvino", "int8")]
    embedders = {}
    for name, fmt, precision in wanted:
        _log(f"export {name}")
        start = time.perf_counter()
        # Random weights rank synthetic people barely above chance (fp32 rank-1 ~15% on 100 identities), so
        # many queries are near-ties that any rounding flips: int8 is accepted here on looser floors,
        # and the agreement measured below on --identities people is what is reported.
        export_model(
            model,
            folder / name,
            format=fmt,
            precision=precision,
            modality=MODALITY,
            verify_identities=50,
            floors=Floors(cosine=0.95, top1=0.8),
        )
        _log(f"  {time.perf_counter() - start:.0f} s (export and its verification)")
        embedders[name] = ExportedEmbedder(folder / name)
    return embedders


def time_ways(ways: dict[str, Callable[[], object]], count: int, rounds: int) -> dict[str, list[float]]:
    names = list(ways)
    for name in names:  # warm-up: first calls allocate, pack weights, compile
        ways[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            start = time.perf_counter()
            ways[name]()
            rates[name].append(count / (time.perf_counter() - start))
        _log(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.2f}" for n in names) + " img/s")
    return rates


def speed(model, embedders: dict[str, ExportedEmbedder], args) -> dict[str, dict[str, float]]:
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batches * args.batch_size, 3, *model.config.image_size, generator=generator)
    array = images.numpy()
    ways: dict[str, Callable[[], object]] = {
        "torch-fp32": lambda: model.embed_image(images, MODALITY, batch_size=args.batch_size)
    }
    for name, embedder in embedders.items():
        ways[name] = lambda e=embedder: e.embed_preprocessed(array, MODALITY, batch_size=args.batch_size)
    rates = time_ways(ways, len(images), args.rounds)
    return {
        name: {
            "images_per_s": statistics.median(values),
            "vs_torch_fp32": statistics.median(a / b for a, b in zip(values, rates["torch-fp32"])),
            "rounds": values,
        }
        for name, values in rates.items()
    }


def agreement_table(model, embedders: dict[str, ExportedEmbedder], identities: int, modality: str, args) -> dict:
    """int8 (and with ``--fp32-agreement`` fp32) runtimes against torch-fp32 on ``identities`` synthetic people."""
    _log(f"agreement ({modality}): rendering {identities} identities x 2")
    renders = synthetic_people(identities, modality, model.config.image_size, args.seed + 7, shots=2)
    batch = preprocessed(model, renders)
    _log(f"agreement ({modality}): torch-fp32 embeddings")
    reference = model.embed_image(torch.from_numpy(batch), modality, batch_size=args.batch_size).numpy()
    split = lambda e: (e[1::2], e[0::2])  # noqa: E731  (query = second render, gallery = first)
    figures = {}
    for name, embedder in embedders.items():
        if name.endswith("fp32") and not args.fp32_agreement:
            continue
        _log(f"agreement ({modality}): {name} embeddings")
        ours = embedder.embed_preprocessed(batch, modality, batch_size=args.batch_size)
        figures[name] = {
            **embedding_agreement(split(reference), split(ours)),
            "max_abs_diff": float(np.abs(ours - reference).max()),
            "identities": identities,
        }
    return figures


def bundled_sysu(args) -> dict[str, dict]:
    """The bundled model, fp32 PyTorch vs int8 runtimes: the SYSU-MM01 protocol over a held-out synthetic
    tree, and top-1 agreement on ``--identities`` synthetic people per modality."""
    from csdn.data.synthetic import write_sysu

    model = csdn.load("synthetic-tiny", progress=False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sysu"
        _log("bundled: writing a held-out synthetic SYSU-MM01 tree")
        write_sysu(root, num_train_ids=2, num_test_ids=args.sysu_ids, images_per_camera=2, seed=11, size=(128, 64))
        ways: dict[str, object] = {"torch-fp32": model}
        for name, fmt in (("ort-int8", "onnx"), ("openvino-int8", "openvino")):
            if fmt == "openvino" and not have("openvino"):
                continue
            export_model(model, Path(tmp) / name, format=fmt, precision="int8", source="synthetic-tiny")
            ways[name] = ExportedEmbedder(Path(tmp) / name)
        for name, way in ways.items():
            _log(f"bundled: SYSU all-search with {name}")
            result = csdn.evaluate(way, "sysu", root=root, mode="all", progress=False)
            search = result.searches[0]
            results[name] = {"rank1": search.rank1, "mAP": search.mAP}
        runtimes = {name: way for name, way in ways.items() if name != "torch-fp32"}
        agreement = {
            modality: agreement_table(model, runtimes, args.identities, modality, args)
            for modality in ("visible", "infrared")
        }
    base = results["torch-fp32"]
    for row in results.values():
        row["rank1_change"], row["mAP_change"] = row["rank1"] - base["rank1"], row["mAP"] - base["mAP"]
    return {"sysu": results, "agreement": agreement}


def print_agreement(table: dict, label: str) -> None:
    for name, row in table.items():
        print(
            f"{label}{name} vs torch-fp32 on {row['identities']} synthetic identities: top-1 agreement "
            f"{row['top1_agreement']:.1%}, cosine min {row['cosine_min']:.4f} / mean {row['cosine_mean']:.4f}, "
            f"max |diff| {row['max_abs_diff']:.2e}; rank-1 fp32 {row['rank1_reference']:.1%}, "
            f"{name} {row['rank1_artifact']:.1%}; changed top-1s had fp32 top-1/top-2 gaps <= "
            f"{row['changed_max_margin']:.4f} (median gap {row['median_margin']:.4f})"
        )


def report(result: dict, args) -> None:
    if "speed" in result:
        report_rn50(result, args)
    if result.get("bundled"):
        print(
            f"\nbundled synthetic-tiny, SYSU-MM01 protocol (all-search, single-shot, 10 trials), "
            f"{args.sysu_ids} held-out synthetic identities:"
        )
        for name, row in result["bundled"]["sysu"].items():
            print(
                f"  {name:<15} rank-1 {row['rank1']:.2%} ({row['rank1_change']:+.2%})  "
                f"mAP {row['mAP']:.2%} ({row['mAP_change']:+.2%})"
            )
        for modality, table in result["bundled"]["agreement"].items():
            print_agreement(table, f"  {modality}: ")


def report_rn50(result: dict, args) -> None:
    print(
        f"\nCSDN-RN50 288x144 (random weights, calibrated BN), flip TTA, batch {args.batch_size}, "
        f"{args.batches} batch(es) per round, {args.rounds} rounds; {result['cpu']}, {result['threads']} threads; "
        f"torch {torch.__version__}"
    )
    print(f"{'way':<15}{'img/s':>8}{'x torch-fp32':>14}")
    for name, row in result["speed"].items():
        print(f"{name:<15}{row['images_per_s']:>8.2f}{row['vs_torch_fp32']:>14.2f}")
    print_agreement(result["agreement"], "")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2, help="batches per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--identities", type=int, default=500, help="synthetic identities for int8 agreement")
    parser.add_argument("--fp32-agreement", action="store_true", help="also measure the fp32 runtimes' agreement")
    parser.add_argument("--sysu-ids", type=int, default=96, help="held-out identities of the bundled model's SYSU tree")
    parser.add_argument("--skip-bundled", action="store_true", help="skip the bundled model's figures")
    parser.add_argument("--skip-rn50", action="store_true", help="skip the RN50 speed and agreement figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)

    result: dict = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    if not args.skip_bundled:
        result["bundled"] = bundled_sysu(args)
    if not args.skip_rn50:
        model = build_model(None, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            embedders = export_all(model, Path(tmp))
            result["speed"] = speed(model, embedders, args)
            result["agreement"] = agreement_table(model, embedders, args.identities, MODALITY, args)
    report(result, args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
