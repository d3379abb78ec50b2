"""Exact top-k with a bfloat16 screen: a fast low-precision product picks candidates, float32 decides.

On hardware with bfloat16 matrix units (CPUs with AVX512-BF16 or AMX, CUDA GPUs) a bfloat16
product runs two to three times faster than a float32 one. Its scores are off by a bounded
amount, so it is used only to rule rows out: a gallery row is re-scored in float32 unless the
screen proves it cannot reach the k-th best float32 score. The answer is therefore exactly the
float32 one, whatever the data; near-ties only cost more re-scoring.

The bound (per query, for a screened cosine ``c = screened product / n`` of a row whose norm ``n``
was computed in the row's storage dtype, within relative ``e_n`` of the true norm)::

    |c - exact| <= A_q + B * |c|
    A_q = |q - bf16(q)|  +  (1 + u) * u_g  +  3.1 * gamma_D  +  1e-6      (q unit, float32)
    B   = u / (1 - u) * (1 + e_n) + e_n                                       (u = 2**-8)

- ``|q - bf16(q)|``: the query's own rounding, measured (Cauchy-Schwarz with ``|g| / n = 1``);
- ``u_g``: the gallery's rounding to bfloat16 (0 when it is stored as bfloat16, else ``u``);
- ``gamma_D = D u32 / (1 - D u32)``: float32 accumulation of D exact bfloat16 products, in any
  order, in the screen (twice over, for units that truncate instead of rounding) and once in the
  float32 re-score (``u32 = 2**-24``);
- ``B |c|``: the product's result is rounded to bfloat16 (round to nearest), relative ``u``, and
  divided by a norm that is off by at most ``e_n`` = half an epsilon of the storage dtype (the
  norm is accumulated in float32, then rounded) plus ``gamma_D``;
- ``1e-6``: the divisions by ``n``, the float32 norm's own rounding and products flushed to zero
  (each below ``2**-126``), all orders of magnitude smaller.
"""

from __future__ import annotations

import torch

from csdn.system.device import cpu_has_bf16

__all__ = ["BF16_UNIT_ROUNDOFF", "bf16_is_fast", "screen_slack", "candidates"]

BF16_UNIT_ROUNDOFF = 2.0**-8  # bfloat16 keeps 8 significant bits; round to nearest
_FP32_UNIT_ROUNDOFF = 2.0**-24
_ABSOLUTE_SLACK = 1e-6


def bf16_is_fast(device: torch.device) -> bool:
    """Whether a bfloat16 matrix product beats a float32 one on ``device`` (bf16 units present)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_bf16()


def screen_slack(queries: torch.Tensor, gallery_dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """``(A [Q], B)`` of the module's bound for unit float32 ``queries`` against rows of ``gallery_dtype``
    whose norms were computed in that dtype."""
    u = BF16_UNIT_ROUNDOFF
    dim = queries.shape[1]
    gamma = dim * _FP32_UNIT_ROUNDOFF / (1 - dim * _FP32_UNIT_ROUNDOFF)
    query_error = torch.linalg.vector_norm(queries - queries.bfloat16().float(), dim=1) * (1 + 1e-5)
    gallery_error = 0.0 if gallery_dtype == torch.bfloat16 else u
    norm_error = torch.finfo(gallery_dtype).eps / 2 + gamma
    slack = query_error + (1 + u) * gallery_error + 3.1 * gamma + _ABSOLUTE_SLACK
    return slack, u / (1 - u) * (1 + norm_error) + norm_error


def candidates(
    screened: torch.Tensor, kth_best: torch.Tensor, slack: torch.Tensor, relative: float, k: int
) -> torch.Tensor:
    """``[M, 2]`` (query, column) pairs of the rows that may still enter the top ``k``, in row-major order.

    ``screened`` holds the screen's cosines of this chunk, ``kth_best`` the float32 k-th best
    score so far per query (``-inf`` while fewer than ``k`` rows were seen). While a query has
    no k-th best yet, the chunk's own k screened-best rows stand in: they score at least
    ``T - A - B|T|`` in float32 (``T`` their k-th screened value; ``c - B|c|`` grows with ``c``),
    so the k-th best overall is at least that ``floor``. A row is out when even its highest
    possible float32 score ``c + A + B|c|`` lies below ``floor``; as that grows with ``c``, this
    is one comparison of ``c`` with a per-query threshold. Most queries have no candidate in
    most chunks, so only the rows whose maximum reaches the threshold are searched.
    """
    floor = kth_best
    if screened.shape[1] >= k and bool(torch.isinf(kth_best).any()):
        chunk_kth = torch.topk(screened, k, dim=1).values[:, k - 1]
        floor = torch.maximum(floor, chunk_kth - slack - relative * chunk_kth.abs())
    need = floor - slack  # solve c + B|c| = need for c
    threshold = torch.where(need >= 0, need / (1 + relative), need / (1 - relative))
    threshold = threshold - _ABSOLUTE_SLACK * (1 + threshold.abs())  # the solution's own rounding: keep more
    reached = (screened.amax(dim=1) >= threshold).nonzero().squeeze(1)
    pairs = (screened[reached] >= threshold[reached].unsqueeze(1)).nonzero()
    pairs[:, 0] = reached[pairs[:, 0]]
    return pairs
