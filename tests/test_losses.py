"""csdn.train.losses against hand-computed values and independent float64 loop implementations."""

from __future__ import annotations

import math

import pytest
import torch

from csdn.train.losses import msel_loss, pairwise_distance, supcon_loss, wrt_triplet_loss


def _dist(x, y) -> float:
    return max(math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y))), 1e-6)


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


# ---------------------------------------------------------------------------- supervised contrastive
def test_supcon_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = identity; each query's only positive has log-prob 1 - log(1 + e)
    assert supcon_loss(a, a, torch.tensor([0, 1]), torch.tensor([0, 1])).item() == pytest.approx(
        math.log(1 + math.e) - 1, rel=1e-6
    )
    # both keys positive for query 0: mean of log-probs (1 - log(1+e)) and (0 - log(1+e))
    loss = supcon_loss(a[:1], a, torch.tensor([0]), torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(math.log(1 + math.e) - 0.5, rel=1e-6)


def test_supcon_matches_loop_reference_without_normalisation_or_temperature():
    torch.manual_seed(0)
    a, b = torch.randn(6, 5, dtype=torch.float64) * 3, torch.randn(7, 5, dtype=torch.float64) * 3
    la, lb = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 1, 0, 0, 1, 2, 2])
    expected = 0.0
    for i in range(6):
        logits = [float(a[i] @ b[j]) for j in range(7)]
        log_z = max(logits) + math.log(sum(math.exp(v - max(logits)) for v in logits))
        positives = [logits[j] - log_z for j in range(7) if lb[j] == la[i]]
        expected -= sum(positives) / len(positives) / 6
    assert supcon_loss(a, b, la, lb).item() == pytest.approx(expected, rel=1e-10)


def test_supcon_rejects_a_query_without_positive_keys():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="without positives"):
        supcon_loss(x, x, torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="feature size"):
        supcon_loss(x, torch.randn(2, 4), torch.tensor([0, 1]), torch.tensor([0, 1]))


# ---------------------------------------------------------------------------- distances
def test_pairwise_distance_has_a_clean_diagonal_and_finite_gradients():
    x = (torch.randn(5, 8) * 100).requires_grad_()
    dist = pairwise_distance(x)
    assert torch.equal(dist.diagonal(), torch.full((5,), 1e-6))
    assert torch.allclose(dist, torch.cdist(x, x).fill_diagonal_(1e-6), rtol=1e-4, atol=1e-2)
    dist.sum().backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------- weighted regularised triplet
def _wrt_reference(points: list[list[float]], pids: list[int]) -> float:
    total = 0.0
    for i, anchor in enumerate(points):
        pos = [_dist(anchor, p) for p, q in zip(points, pids) if q == pids[i]]
        neg = [_dist(anchor, p) for p, q in zip(points, pids) if q != pids[i]]
        furthest = sum(w * d for w, d in zip(_softmax(pos), pos))
        closest = sum(w * d for w, d in zip(_softmax([-d for d in neg]), neg))
        total += math.log1p(math.exp(furthest - closest))
    return total / len(points)


def test_wrt_triplet_hand_computed_in_one_dimension():
    # points 0, 1 (id 0) and 3, 5 (id 1); each anchor counts itself as a positive at 1e-6
    def furthest(d):  # softmax(d)-weighted positives {1e-6, d}
        return (math.exp(d) * d + math.exp(1e-6) * 1e-6) / (math.exp(d) + math.exp(1e-6))

    def closest(a, b):  # softmax(-d)-weighted negatives {a, b}
        return (math.exp(-a) * a + math.exp(-b) * b) / (math.exp(-a) + math.exp(-b))

    margins = [
        furthest(1) - closest(3, 5),
        furthest(1) - closest(2, 4),
        furthest(2) - closest(3, 2),
        furthest(2) - closest(5, 4),
    ]
    expected = sum(math.log1p(math.exp(m)) for m in margins) / 4
    value = wrt_triplet_loss(torch.tensor([[0.0], [1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1, 1]), stable=True).item()
    assert value == pytest.approx(expected, rel=1e-6)


def test_wrt_triplet_matches_loop_reference_on_random_features():
    torch.manual_seed(1)
    x = torch.randn(12, 6, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    expected = _wrt_reference(x.tolist(), pids.tolist())
    assert wrt_triplet_loss(x, pids, stable=True).item() == pytest.approx(expected, rel=1e-9)


def test_stable_wrt_triplet_stays_correct_at_large_distances():
    # ids interleaved far apart: every anchor's furthest positive is 10000 away and its
    # closest negative 2000 away, so the loss is softplus(8000) = 8000. A softmax taken
    # over masked zeros (or with an epsilon guard) underflows here and reports 10000 or inf.
    x = torch.tensor([[0.0], [10000.0], [2000.0], [12000.0]], requires_grad=True)
    loss = wrt_triplet_loss(x, torch.tensor([0, 0, 1, 1]), stable=True)
    assert loss.item() == pytest.approx(8000.0, rel=1e-5)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    huge = wrt_triplet_loss(torch.randn(8, 4) * 1e6, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), stable=True)
    assert torch.isfinite(huge)


def _authors_wrt(points: list[list[float]], pids: list[int]) -> float:
    """The authors' TripletLoss_WRT written out per anchor: no special diagonal (distance floor
    sqrt(1e-12) = 1e-6 only where the expanded formula rounds below it), weights
    exp(v - max(v * mask)) * mask / (sum + 1e-6) with masked entries as zeros in the max, soft margin."""
    total = 0.0
    for i, anchor in enumerate(points):
        dist = [
            math.sqrt(
                max(
                    sum(a * a for a in anchor) + sum(b * b for b in p) - 2 * sum(a * b for a, b in zip(anchor, p)),
                    1e-12,
                )
            )
            for p in points
        ]
        pos = [float(q == pids[i]) for q in pids]
        neg = [1.0 - m for m in pos]
        d_ap = [d * m for d, m in zip(dist, pos)]
        d_an = [d * m for d, m in zip(dist, neg)]

        def weights(values, mask):
            top = max(v * m for v, m in zip(values, mask))
            exps = [math.exp(v - top) * m for v, m in zip(values, mask)]
            return [e / (sum(exps) + 1e-6) for e in exps]

        furthest = sum(d * w for d, w in zip(d_ap, weights(d_ap, pos)))
        closest = sum(d * w for d, w in zip(d_an, weights([-d for d in d_an], neg)))
        total += math.log1p(math.exp(-(closest - furthest)))
    return total / len(points)


def test_wrt_triplet_default_is_the_authors_formula():
    torch.manual_seed(1)
    x = torch.randn(12, 6, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    ours = wrt_triplet_loss(x, pids).item()
    assert ours == pytest.approx(_authors_wrt(x.tolist(), pids.tolist()), rel=1e-9)
    # the 1e-6 guard alone already moves it away from the exact masked softmax
    assert ours != pytest.approx(wrt_triplet_loss(x, pids, stable=True).item(), rel=1e-9)


def test_authors_wrt_degenerates_to_softplus_of_the_furthest_positive_beyond_distance_14():
    # two tight identities 30 apart: every negative distance is ~30, so exp(-30) (1e-13) is
    # swamped by the 1e-6 in the normaliser, the soft closest negative drops to ~0 and the
    # loss becomes softplus(furthest positive) > log 2, while the correct loss is ~0.
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [30.0, 0.0], [30.1, 0.0]], dtype=torch.float64, requires_grad=True)
    pids = torch.tensor([0, 0, 1, 1])
    quirk = wrt_triplet_loss(x, pids)
    assert quirk.item() == pytest.approx(_authors_wrt(x.tolist(), pids.tolist()), rel=1e-9)
    assert quirk.item() > math.log(2) and wrt_triplet_loss(x, pids, stable=True).item() < 1e-7
    at_ten = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]], dtype=torch.float64)
    assert wrt_triplet_loss(at_ten, pids).item() < 1e-3  # below ~14 the guard is negligible
    quirk.backward()
    assert torch.isfinite(x.grad).all()


def test_wrt_triplet_needs_two_identities():
    with pytest.raises(ValueError, match="two identities"):
        wrt_triplet_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------------------- MSEL
def test_msel_hand_computed():
    # one identity, num_pos 2: visible at 0 and 2, infrared at 5 and 6.
    # visible: intra 2 and 2, cross (5+6)/2=5.5 and (3+4)/2=3.5 -> (3.5^2 + 1.5^2)/2 = 7.25
    # infrared: intra 1 and 1, cross (5+3)/2=4 and (6+4)/2=5 -> (3^2 + 4^2)/2 = 12.5
    x = torch.tensor([[0.0], [2.0], [5.0], [6.0]])
    assert msel_loss(x, torch.tensor([7, 7, 7, 7]), num_pos=2).item() == pytest.approx((7.25 + 12.5) / 2, rel=1e-6)


def _msel_reference(x: torch.Tensor, pids: list[int], num_pos: int) -> float:
    half = len(pids) // 2
    rows = x.tolist()
    terms = []
    for own, other in ((range(half), range(half, 2 * half)), (range(half, 2 * half), range(half))):
        diffs = []
        for j in own:
            intra = sorted((_dist(rows[j], rows[k]) for k in own if pids[k] == pids[j]), reverse=True)[: num_pos - 1]
            cross = [_dist(rows[j], rows[k]) for k in other if pids[k] == pids[j]]
            diffs.append((sum(cross) / len(cross) - sum(intra) / len(intra)) ** 2)
        terms.append(sum(diffs) / len(diffs))
    return sum(terms) / 2


def test_msel_matches_loop_reference_on_a_sampler_batch():
    torch.manual_seed(2)
    pids = [0] * 4 + [1] * 4 + [2] * 4
    x = torch.randn(24, 5, dtype=torch.float64)
    value = msel_loss(x, torch.tensor(pids + pids), num_pos=4).item()
    assert value == pytest.approx(_msel_reference(x, pids + pids, 4), rel=1e-9)


def test_msel_rejects_batches_it_cannot_pair():
    x = torch.randn(8, 3)
    with pytest.raises(ValueError, match="same identity sequence"):
        msel_loss(x, torch.tensor([0, 0, 1, 1, 1, 1, 0, 0]), num_pos=2)
    with pytest.raises(ValueError, match="at least num_pos=4"):
        msel_loss(x, torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), num_pos=4)
