"""Evaluation on the VI-ReID benchmarks: the literature's metrics, the standard protocols end to
end, and the result types they return.

``eval_sysu`` / ``eval_regdb`` / ``eval_llcm`` score a distance matrix; ``evaluate``
runs a benchmark's whole protocol on a model.
"""

from csdn.evaluation.metrics import eval_llcm, eval_regdb, eval_sysu
from csdn.evaluation.protocol import evaluate
from csdn.evaluation.results import RANKS, SCORES, EvaluationResult, SearchResult, TrialResult

__all__ = [
    "eval_sysu",
    "eval_regdb",
    "eval_llcm",
    "evaluate",
    "EvaluationResult",
    "SearchResult",
    "TrialResult",
    "RANKS",
    "SCORES",
]
