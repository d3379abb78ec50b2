"""What a trained model records about its training data, and the RegDB leakage check that record enables.

One place for these fields: :func:`training_data` writes them into a model's provenance record
(``model.provenance``, saved as the top-level ``meta`` section of ``config.json``, beside the
architecture rather than inside it; format-1 configs' ``meta`` is read as the same record;
``csdn train`` does), :func:`trained_on` reads them back, and
:func:`check_trial_overlap` refuses a RegDB evaluation whose test identities the
model was trained on. RegDB's ten splits share identities: trial 2's training half
overlaps trial 1's test half, so scoring a trial-2 model on trial 1 reports
memorised people as retrieved ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DATASET_KEY = "dataset"  # also what the model card's "Trained on" line reads
TRIAL_KEY = "trial"  # RegDB only: the identity split trained on
WEIGHTS_KEY = "weights"  # "self-trained" (csdn train) or "converted" (csdn convert)
SELF_TRAINED = "self-trained"
CONVERTED = "converted"


@dataclass(frozen=True)
class TrainedOn:
    dataset: str | None  # a reader's name ("sysu", "regdb", "llcm", "folder"), None when not recorded
    trial: int | None


def training_data(dataset: str | None, trial: int | None) -> dict[str, Any]:
    """The ``meta`` fields of a model ``csdn train`` made on ``dataset`` (``trial``: RegDB's split)."""
    meta: dict[str, Any] = {WEIGHTS_KEY: SELF_TRAINED, DATASET_KEY: dataset or "custom"}
    if trial is not None:
        meta[TRIAL_KEY] = int(trial)
    return meta


def trained_on(meta: Mapping[str, Any] | None) -> TrainedOn:
    """The dataset and trial a model's ``meta`` records (each None when absent)."""
    meta = meta or {}
    trial = meta.get(TRIAL_KEY)
    dataset = meta.get(DATASET_KEY)
    return TrainedOn(str(dataset).lower() if dataset else None, int(trial) if trial is not None else None)


def check_trial_overlap(reader: Any, model_trial: int, trials: Sequence[int], allow_overlap: bool = False) -> None:
    """Refuse scoring a trial whose test identities are among ``model_trial``'s training identities.

    ``reader`` is a trial-bound reader (RegDB) with ``identities(split, trial)``.
    """
    if allow_overlap:
        return
    trained = reader.identities("train", model_trial)
    for trial in trials:
        if trial == model_trial:
            continue
        shared = sorted(trained & reader.identities("test", trial), key=_natural)
        if shared:
            tested = len(reader.identities("test", trial))
            shown = ", ".join(shared[:8]) + (", ..." if len(shared) > 8 else "")
            raise ValueError(
                f"the model was trained on {reader.title} trial {model_trial}, and {len(shared)} of trial {trial}'s "
                f"{tested} test identities ({shown}) are among its training identities; evaluate on trial "
                f"{model_trial} (--trials {model_trial}), or pass --allow-overlap (allow_overlap=True) to score "
                "the leaked split anyway"
            )


def _natural(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 62, name)
