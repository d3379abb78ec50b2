"""What an evaluation returns: per-trial scores, their mean and spread per search direction, and a
printable table; JSON-serialisable for reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from csdn.errors import AmbiguousResultError

RANKS = (1, 5, 10, 20)
SCORES = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")

# (dataset, direction, mode, shots) -> (queries, gallery images) of one trial of the published test
# protocol; None where that side is drawn per trial and the literature gives no count (LLCM's sampled side).
# SYSU-MM01: 96 test identities, every infrared image queries; RegDB: 206 identities x 10 images a
# modality; LLCM: 351 identities, 7166 NIR and 8680 visible test images.
PUBLISHED_SIZES: dict[tuple[str, str, str | None, int | None], tuple[int | None, int | None]] = {
    ("SYSU-MM01", "infrared->visible", "all", 1): (3803, 301),
    ("SYSU-MM01", "infrared->visible", "all", 10): (3803, 3010),
    ("SYSU-MM01", "infrared->visible", "indoor", 1): (3803, 112),
    ("SYSU-MM01", "infrared->visible", "indoor", 10): (3803, 1120),
    ("RegDB", "visible->infrared", None, None): (2060, 2060),
    ("RegDB", "infrared->visible", None, None): (2060, 2060),
    ("LLCM", "infrared->visible", None, 1): (7166, None),
    ("LLCM", "infrared->visible", None, 10): (7166, None),
    ("LLCM", "visible->infrared", None, 1): (None, 8680),  # the drawn NIR images probe every visible one
    ("LLCM", "visible->infrared", None, 10): (None, 8680),
}


def _rank(cmc: np.ndarray, k: int) -> float:
    """Rank-k accuracy; a CMC shorter than k (fewer gallery identities than k) has saturated."""
    return float(cmc[min(k, len(cmc)) - 1])


def _mean_score(name: str) -> property:
    return property(lambda self: self.mean[name], doc=f"{name} averaged over trials (a fraction in [0, 1]).")


class _Scores:
    """``rank1`` ... ``mINP`` read from ``self.mean``."""

    mean: dict[str, float]
    rank1, rank5, rank10, rank20 = (_mean_score(f"rank{k}") for k in RANKS)
    mAP = _mean_score("mAP")  # noqa: N815 - the literature's names
    mINP = _mean_score("mINP")  # noqa: N815


@dataclass
class TrialResult:
    """Scores of one trial (one gallery draw or one split)."""

    trial: int
    cmc: np.ndarray
    mAP: float
    mINP: float
    num_query: int
    num_gallery: int

    @property
    def scores(self) -> dict[str, float]:
        ranks = {f"rank{k}": _rank(self.cmc, k) for k in RANKS}
        return {**ranks, "mAP": self.mAP, "mINP": self.mINP}

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            **self.scores,
            "cmc": [float(v) for v in self.cmc],
            "num_query": self.num_query,
            "num_gallery": self.num_gallery,
        }


@dataclass
class SearchResult(_Scores):
    """One search direction over all its trials: mean and (sample) standard deviation."""

    direction: str
    trials: list[TrialResult]

    @property
    def mean(self) -> dict[str, float]:  # type: ignore[override]
        return {name: float(np.mean([t.scores[name] for t in self.trials])) for name in SCORES}

    @property
    def std(self) -> dict[str, float]:
        ddof = 1 if len(self.trials) > 1 else 0
        return {name: float(np.std([t.scores[name] for t in self.trials], ddof=ddof)) for name in SCORES}

    @property
    def cmc(self) -> np.ndarray:
        """Mean CMC over trials (to the shortest trial's length)."""
        length = min(len(t.cmc) for t in self.trials)
        return np.mean([t.cmc[:length] for t in self.trials], axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "mean": self.mean,
            "std": self.std,
            "cmc": [float(v) for v in self.cmc],
            "trials": [t.to_dict() for t in self.trials],
        }


@dataclass
class EvaluationResult(_Scores):
    """Result of :func:`evaluate`: one :class:`SearchResult` per search direction.

    With one direction (SYSU-MM01's infrared->visible, or a chosen ``direction=``),
    ``rank1`` ... ``mINP``, ``mean``, ``std`` and ``cmc`` are that search's. A result of
    several directions (RegDB and LLCM by default) has no single figure: reading
    ``result.rank1`` raises :class:`csdn.errors.AmbiguousResultError` naming the
    directions; read ``result["visible->infrared"].rank1`` (or iterate ``result.searches``).
    Scores are fractions in [0, 1]; ``str(result)`` prints them as percentages.
    """

    dataset: str
    settings: dict[str, Any]
    searches: list[SearchResult] = field(default_factory=list)

    def __getitem__(self, direction: str) -> SearchResult:
        from csdn.data.direction import parse_direction

        wanted = parse_direction(direction)
        for search in self.searches:
            if search.direction == wanted:
                return search
        raise KeyError(f"no {wanted} search in this result; it has {', '.join(s.direction for s in self.searches)}")

    @property
    def directions(self) -> list[str]:
        """The search directions this result holds, in protocol order."""
        return [search.direction for search in self.searches]

    @property
    def only(self) -> SearchResult:
        """The one search of a single-direction result; an error naming the choices otherwise."""
        if len(self.searches) == 1:
            return self.searches[0]
        choices = " or ".join(f"result[{d!r}]" for d in self.directions)
        raise AmbiguousResultError(
            f"this {self.dataset} result holds {len(self.searches)} search directions "
            f"({', '.join(self.directions)}), each with its own scores; read one of them: {choices} "
            "(e.g. result[...].rank1), or evaluate with direction=... for a single-direction result"
        )

    @property
    def mean(self) -> dict[str, float]:  # type: ignore[override]
        return self.only.mean

    @property
    def std(self) -> dict[str, float]:
        return self.only.std

    @property
    def cmc(self) -> np.ndarray:
        return self.only.cmc

    def nonstandard(self) -> list[str]:
        """Each search whose query or gallery count differs from the published protocol's, in words
        (``[]`` when every count matches): a partial or synthetic copy of the benchmark scores numbers
        that cannot be compared with the literature's."""
        problems = []
        for search in self.searches:
            key = (self.dataset, search.direction, self.settings.get("mode"), self.settings.get("shots"))
            if key not in PUBLISHED_SIZES:
                problems.append(f"{self.dataset} {search.direction} with {self.settings} has no published size")
                continue
            published = PUBLISHED_SIZES[key]
            for trial in search.trials:
                found = (trial.num_query, trial.num_gallery)
                if any(want is not None and want != got for want, got in zip(published, found)):
                    wanted = " and ".join(
                        f"{want} {side}" for want, side in zip(published, ("queries", "gallery images")) if want
                    )
                    problems.append(
                        f"{search.direction} trial {trial.trial}: {found[0]} queries and {found[1]} gallery images "
                        f"(published: {wanted})"
                    )
                    break  # one trial says it; the others share the test set
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "settings": dict(self.settings),
            "searches": [s.to_dict() for s in self.searches],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        header = f"{self.dataset}: " + ", ".join(f"{k}={v}" for k, v in self.settings.items())
        lines = [header]
        if self.settings.get("rerank"):
            lines.append("(k-reciprocal re-ranking: not part of the paper's protocol)")
        columns = "".join(f"{name:>9}" for name in ("R-1", "R-5", "R-10", "R-20", "mAP", "mINP"))
        for search in self.searches:
            first = search.trials[0]
            lines += ["", f"{search.direction}  ({first.num_query} queries, {first.num_gallery} gallery images)"]
            lines.append(f"{'trial':>8}{columns}")
            for trial in search.trials:
                lines.append(f"{trial.trial:>8}" + "".join(f"{100 * trial.scores[n]:9.2f}" for n in SCORES))
            if len(search.trials) > 1:
                lines.append(f"{'mean':>8}" + "".join(f"{100 * search.mean[n]:9.2f}" for n in SCORES))
                lines.append(f"{'std':>8}" + "".join(f"{100 * search.std[n]:9.2f}" for n in SCORES))
        return "\n".join(lines)
