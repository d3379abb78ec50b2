"""A plain, one-query-at-a-time implementation of the VI-ReID metrics.

It follows the shape of the literature's evaluation scripts (rank all rows once,
then a Python loop over queries with small NumPy steps), so the vectorised
:mod:`csdn.evaluation.metrics` can be checked against it (tests) and timed against it
(benchmarks/bench_eval.py). Not part of the package.
"""

from __future__ import annotations

import numpy as np


def reference_metrics(distmat, q_pids, g_pids, q_camids, g_camids, *, rule: str, max_rank: int = 20):
    """``(cmc, mAP, mINP)`` by the per-query loop; ``rule`` is "sysu", "llcm" or "regdb"."""
    distmat, q_pids, g_pids = np.asarray(distmat), np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    order = np.argsort(distmat, axis=1)
    hits, aps, inps = [], [], []
    for q in range(len(distmat)):
        ranked = order[q]
        if rule == "sysu" and q_camids[q] == 3:
            ranked = ranked[g_camids[ranked] != 2]
        elif rule == "llcm":
            ranked = ranked[~((g_pids[ranked] == q_pids[q]) & (g_camids[ranked] == q_camids[q]))]
        correct = g_pids[ranked] == q_pids[q]
        if not correct.any():
            continue
        if rule == "regdb":
            hits.append(int(np.argmax(correct)) + 1)
        else:  # position of the query's identity in the list of first occurrences of each identity
            _, first_seen = np.unique(g_pids[ranked], return_index=True)
            identities = g_pids[ranked][np.sort(first_seen)]
            hits.append(int(np.flatnonzero(identities == q_pids[q])[0]) + 1)
        positions = np.flatnonzero(correct) + 1
        aps.append(float(np.mean(np.arange(1, len(positions) + 1) / positions)))
        inps.append(len(positions) / positions[-1])
    length = min(max_rank, len(np.unique(g_pids)) if rule != "regdb" else len(g_pids))
    cmc = np.array([np.mean([h <= k for h in hits]) for k in range(1, length + 1)])
    return cmc, float(np.mean(aps)), float(np.mean(inps))
