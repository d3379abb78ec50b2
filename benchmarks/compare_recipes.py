"""What the training recipe changes: the same model, data and seed trained with ``recipe="reference"``
(the authors' code, quirks included) and ``recipe="clean"`` (each quirk corrected), scored on
held-out synthetic identities.

    python benchmarks/compare_recipes.py                         # both recipes, one after the other
    python benchmarks/compare_recipes.py --recipe clean --json clean.json --threads 1   # one, for parallel runs

The model is the bundled demo's architecture and schedule (``examples/train_synthetic_tiny.py``)
on a smaller synthetic SYSU-MM01 tree and a shorter stage 3, so one recipe trains in minutes on
a CPU. Both recipes keep ``TrainConfig()``'s MSEL term (the authors' stage 3 has it), which the
bundled demo model was trained without. Scores: SYSU-MM01 protocol, infrared queries against a single-shot visible gallery,
all-search, 10 trials (mean +- std).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import csdn
from csdn import CSDN
from csdn.data import SYSUMM01
from csdn.data.synthetic import write_sysu
from csdn.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from train_synthetic_tiny import INIT_SEED, TRAIN, model_config  # noqa: E402  (the demo's architecture)

DATA = dict(num_train_ids=300, num_test_ids=50, images_per_camera=2, seed=0, size=(128, 64))
SHORTER = dict(stage3_epochs=20, milestones=(14, 18), msel_weight=TrainConfig().msel_weight)


def train_and_score(recipe: str, seed: int, root: Path, workdir: Path) -> dict[str, float]:
    reader = SYSUMM01(root)
    num_classes = len({sample.pid for sample in reader.train.visible})
    torch.manual_seed(INIT_SEED + seed - 1)
    model = CSDN(model_config(num_classes))
    config = TrainConfig.from_dict({**TRAIN.to_dict(), **SHORTER, "recipe": recipe, "seed": seed})
    started = time.perf_counter()
    fit(reader, config, output_dir=workdir / recipe, init=model, progress=False)
    seconds = time.perf_counter() - started
    result = csdn.evaluate(model.eval(), "sysu", root=root, mode="all", shots=1, trials=list(range(10)), progress=False)
    return {
        "recipe": recipe,
        "seed": seed,
        "rank1": result.rank1,
        "rank1_std": result.std["rank1"],
        "mAP": result.mAP,
        "mAP_std": result.std["mAP"],
        "train_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=("both", "reference", "clean"), default="both")
    parser.add_argument("--seed", type=int, default=1, help="training seed (and initial weights)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipes = ("reference", "clean") if args.recipe == "both" else (args.recipe,)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sysu"
        write_sysu(root, **DATA)
        rows = [train_and_score(recipe, args.seed, root, Path(tmp)) for recipe in recipes]
    print(f"{'recipe':<10} {'seed':>4} {'rank-1 %':>14} {'mAP %':>14} {'train s':>8}")
    for row in rows:
        print(
            f"{row['recipe']:<10} {row['seed']:4d} {100 * row['rank1']:8.1f} +- {100 * row['rank1_std']:3.1f} "
            f"{100 * row['mAP']:8.1f} +- {100 * row['mAP_std']:3.1f} {row['train_seconds']:8.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
