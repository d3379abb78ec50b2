"""What the ``csdn`` command's glibc allocator setting (:mod:`csdn.system.allocator`) gives a stage-3 step.

The setting is per process, so each measurement is a fresh child process: ``default`` runs
stage-3 steps (``csdn.train.stages.image_step`` + Adam, as in ``bench_train.py``) with glibc's
defaults, ``kept`` calls ``keep_freed_memory()`` first, as ``csdn`` does. Children alternate,
``rounds`` of each; a child reports its seconds per step (median over its timed steps, after one
warm-up step), the minor page faults per step and its peak RSS. The last line reads
``ratio <default s/step / kept s/step>`` (the median of per-round ratios).

    python benchmarks/bench_allocator.py                    # small images (96x48), ~2 minutes
    python benchmarks/bench_allocator.py --size full --rounds 3 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import SIZES, build_model, cpu_name, make_batch  # noqa: E402  (the same step and machine report)

from csdn.system.allocator import keep_freed_memory  # noqa: E402
from csdn.train import TrainConfig  # noqa: E402
from csdn.train.stages import autocast_factory, image_step, make_optimizer  # noqa: E402


def child(setting: str, size: str, steps: int, threads: int) -> dict:
    applied = keep_freed_memory() if setting == "kept" else False
    torch.set_num_threads(threads)
    model_config, ids, per_id = SIZES[size]
    model = build_model(model_config, seed=0)
    batch = make_batch(model_config, ids, per_id, seed=0)
    text = torch.randn(model_config.num_classes, model_config.embed_dim)
    config = TrainConfig(recipe="reference", ids_per_batch=ids, images_per_id=per_id)
    optimizer = make_optimizer(model, 3, config, frozen=set())
    fp32 = autocast_factory("fp32", torch.device("cpu"))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        image_step(model, batch, text, config, fp32)["loss"].backward()
        optimizer.step()

    step()  # warm-up: first-touch of weights, optimiser state, kernels' scratch
    seconds, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {
        "setting": setting,
        "applied": applied,
        "seconds": statistics.median(seconds),
        "faults": statistics.median(faults),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # ru_maxrss: KiB on Linux
    }


def run_child(setting: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", setting, "--size", args.size, "--steps", str(args.steps)]
    command += ["--threads", str(args.threads)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per child")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", choices=("default", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.steps, args.threads)))
        return
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; {args.threads} threads; size {args.size}")
    results: dict[str, list[dict]] = {"default": [], "kept": []}
    for round_ in range(args.rounds):
        for setting in ("default", "kept") if round_ % 2 == 0 else ("kept", "default"):
            results[setting].append(run_child(setting, args))
        default, kept = results["default"][-1], results["kept"][-1]
        print(
            f"  round {round_ + 1}: default {default['seconds']:.3f} s/step ({default['faults']:.0f} faults), "
            f"kept {kept['seconds']:.3f} s/step ({kept['faults']:.0f} faults, applied: {kept['applied']}); "
            f"peak RSS {default['peak_rss_gib']:.2f} / {kept['peak_rss_gib']:.2f} GiB"
        )
    ratio = statistics.median(d["seconds"] / k["seconds"] for d, k in zip(results["default"], results["kept"]))
    for setting, rows in results.items():
        seconds = statistics.median(row["seconds"] for row in rows)
        faults = statistics.median(row["faults"] for row in rows)
        peak = max(row["peak_rss_gib"] for row in rows)
        print(f"{setting:<8} {seconds:8.3f} s/step  {faults:10.0f} minor page faults/step  peak RSS {peak:.2f} GiB")
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
