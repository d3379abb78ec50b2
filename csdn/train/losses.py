"""Training objectives of CSDN as plain functions of tensors.

* :func:`supcon_loss` aligns image and text features in stages 1 and 2;
* :func:`wrt_triplet_loss` and :func:`msel_loss` shape the image embedding in stage 3,
  next to identity cross-entropy (``torch.nn.functional.cross_entropy``, no label
  smoothing in the reference training).

Distances are Euclidean, computed as ``sqrt(max(|a|^2 + |b|^2 - 2 a.b, 1e-12))``
like the authors' code. :func:`pairwise_distance` also sets the distance of a
sample to itself to exactly that floor: the expanded formula leaves rounding
noise on the diagonal whose square root would otherwise feed large, meaningless
gradients. The authors' triplet loss keeps that noise; :func:`wrt_triplet_loss`
reproduces it unless asked for the ``stable`` form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_DISTANCE_FLOOR = 1e-12


def _expanded_squared_distance(features: torch.Tensor) -> torch.Tensor:
    """``|a|^2 + |b|^2 - 2 a.b`` for every pair of rows, with the authors' fused ``addmm``."""
    squared = features.pow(2).sum(dim=1, keepdim=True)
    return torch.addmm(squared + squared.t(), features, features.t(), beta=1.0, alpha=-2.0)


def pairwise_distance(features: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[N, N]`` between the rows of ``features`` (diagonal = 1e-6)."""
    diagonal = torch.eye(features.shape[0], dtype=torch.bool, device=features.device)
    return _expanded_squared_distance(features).masked_fill(diagonal, 0.0).clamp(min=_DISTANCE_FLOOR).sqrt()


def _check_pair(features: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{name} must be a 2-d tensor [N, D], got shape {list(features.shape)}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels for {name} must be 1-d with one entry per row ({features.shape[0]}), "
            f"got shape {list(labels.shape)}"
        )


def supcon_loss(a: torch.Tensor, b: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """Supervised contrastive loss of queries ``a`` against keys ``b`` (temperature 1, no normalisation).

    With logits ``s = a @ b.T``, each query's loss is minus the mean, over the keys
    with its label, of ``log softmax(s_i)``; the result is the mean over queries.
    Stage 1 and 2 use it both ways (image->text and text->image), so the raw,
    unnormalised CLIP feature scale acts as the (implicit) temperature.
    """
    _check_pair(a, labels_a, "a")
    _check_pair(b, labels_b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same feature size, got {a.shape[1]} and {b.shape[1]}")
    positives = labels_a[:, None] == labels_b[None, :]
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every label in labels_a must also occur in labels_b (a query without positives)")
    log_prob = (a @ b.t()).log_softmax(dim=1)
    positives = positives.to(log_prob.dtype)
    mean_log_prob = (positives * log_prob).sum(dim=1) / positives.sum(dim=1)
    return -mean_log_prob.mean()


def _masked_softmax(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax over the entries where ``mask`` is true (others get weight 0)."""
    return values.masked_fill(~mask, float("-inf")).softmax(dim=1)


def _guarded_softmax(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The authors' row weights: ``exp(v - m) * mask / (sum(exp(v - m) * mask) + 1e-6)``.

    ``m`` is the row maximum of ``values * mask``, so masked-out entries count as
    zeros there; when every unmasked value lies far below zero the normaliser is
    dominated by the ``1e-6`` and the weights collapse towards 0.
    """
    shifted = values - (values * mask).max(dim=1, keepdim=True).values
    weights = shifted.exp() * mask
    return weights / (weights.sum(dim=1, keepdim=True) + 1e-6)


def wrt_triplet_loss(features: torch.Tensor, pids: torch.Tensor, *, stable: bool = False) -> torch.Tensor:
    """Weighted regularised triplet loss (AGW): soft-margin triplet with softmax-weighted mining.

    For each anchor, positives are weighted by a softmax of ``d`` and negatives by
    a softmax of ``-d`` over their own sets, giving a soft furthest positive ``d_p``
    and soft closest negative ``d_n``; the loss is ``mean(log(1 + exp(d_p - d_n)))``.
    The anchor itself counts as a positive, as in AGW.

    By default this is the authors' formula exactly (``recipe="reference"``):
    distances with no special diagonal, weights from :func:`_guarded_softmax`,
    and ``soft_margin_loss(d_n - d_p, 1)``. Once every negative of an anchor lies
    beyond a distance of about 14 its weights vanish under the ``1e-6`` guard,
    ``d_n`` drops to ~0 and the term degenerates to ``softplus(d_p)``.
    ``stable=True`` uses exact masked softmaxes and a zero diagonal instead, which
    stay correct at any distance scale (``recipe="clean"``).
    """
    _check_pair(features, pids, "features")
    same = pids[:, None] == pids[None, :]
    if bool(same.all()):
        raise ValueError("wrt_triplet_loss needs at least two identities in the batch")
    if stable:
        dist = pairwise_distance(features)
        furthest_positive = (dist * _masked_softmax(dist, same)).sum(dim=1)
        closest_negative = (dist * _masked_softmax(-dist, ~same)).sum(dim=1)
        return F.softplus(furthest_positive - closest_negative).mean()
    dist = _expanded_squared_distance(features).clamp(min=_DISTANCE_FLOOR).sqrt()
    positive, negative = same.to(dist.dtype), (~same).to(dist.dtype)
    positive_dist, negative_dist = dist * positive, dist * negative
    furthest_positive = (positive_dist * _guarded_softmax(positive_dist, positive)).sum(dim=1)
    closest_negative = (negative_dist * _guarded_softmax(-negative_dist, negative)).sum(dim=1)
    return F.soft_margin_loss(closest_negative - furthest_positive, torch.ones_like(closest_negative))


def msel_loss(features: torch.Tensor, pids: torch.Tensor, num_pos: int = 4) -> torch.Tensor:
    """Modality-Shared Enhancement Loss (MSEL, from PMT, used by CSDN's stage 3).

    ``features`` holds the visible samples in its first half and the infrared
    samples in its second half, with the same identity sequence in both halves
    (what the identity sampler produces). For a sample ``j`` of modality ``m``:

    * ``intra(j)`` = mean of the ``num_pos - 1`` largest distances from ``j`` to
      samples of the same identity in modality ``m`` (with exactly ``num_pos``
      such samples, the sample itself - distance ~0 - is the one left out);
    * ``cross(j)`` = mean distance from ``j`` to the samples of the same identity
      in the other modality.

    ``L = 1/2 * sum_m mean_j (cross(j) - intra(j))^2``: it pulls the cross-modality
    spread of each identity towards its within-modality spread.
    """
    _check_pair(features, pids, "features")
    if num_pos < 2:
        raise ValueError(f"num_pos must be at least 2, got {num_pos}")
    total = features.shape[0]
    half = total // 2
    if total % 2 or not torch.equal(pids[:half], pids[half:]):
        raise ValueError(
            "msel_loss expects [visible; infrared] rows with the same identity sequence in both "
            "halves, as the identity sampler yields them"
        )
    same = pids[:half, None] == pids[None, :half]
    if int(same.sum(dim=1).min()) < num_pos:
        raise ValueError(f"each identity needs at least num_pos={num_pos} samples per modality in the batch")
    dist = pairwise_distance(features)
    terms = []
    for rows, cols in ((slice(0, half), slice(half, total)), (slice(half, total), slice(0, half))):
        intra = (dist[rows, rows] * same).topk(num_pos - 1, dim=1).values.mean(dim=1)
        cross = (dist[rows, cols] * same).sum(dim=1) / same.sum(dim=1)
        terms.append((cross - intra).pow(2).mean())
    return (terms[0] + terms[1]) / 2
