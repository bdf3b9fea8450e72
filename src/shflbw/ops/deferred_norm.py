"""A deferred LayerNorm: the attention tail hands on ``s`` and its statistics, not ``LayerNorm(s)``.

In a BERT-style layer the attention sublayer ends ``h = LayerNorm(s)``, ``s = dense(x) + residual``,
and ``h`` has exactly two readers in the same layer: the MLP's fc1 and the MLP tail's residual. The
LayerNorm kernel between them reads and writes 64 MB on BERT-large (55 us of ~900 a layer on the
H200, bandwidth-bound). Instead, the SpMM writing ``s`` also adds each token's sum and sum of
squares into a small float32 buffer (atomics in its epilogue), and the readers finish the norm:

- fc1: W LN(s) = rs * (W' s - mean * c) + W beta, with W' = W diag(gain) (still Shfl-BW: the
  same mask, columns scaled), c = rowsum(W') and W beta folded into fc1's bias; the SpMM reads s
  and applies mean and rs per token in its epilogue (kernels/spmm.py ``NORM_IN``);
- the MLP tail: normalises the residual as it reads it (kernels/addnorm.py ``NORM_RES``).

The value handed between the Hugging Face modules is one ordinary tensor, "LayerNorm-pending":
shape (..., M + r), a token-major shaped view (strides (1, T) over the flattened tokens) of a
contiguous feature-major buffer [M + r, T] whose first M rows are s and whose last r rows
(r = 8 bytes / element size: 4 for bf16 / fp16, 2 for fp32) hold the float32 [2, T] statistics.
Only shflbw's linked regions read it (nn/deferred_norm.py links them after checking the whole
layer); anything else sees a tensor r features too wide, never a silently wrong LayerNorm output.

The variance is E[s^2] - mean^2 in float32: exact enough while mean^2 / var stays under ~1e4
(a LayerNorm input's mean is small against its spread; the kernel in kernels/addnorm.py keeps the
shifted form for the non-deferred path).
"""

from __future__ import annotations

import torch

from shflbw.format.matrix import group_ids
from shflbw.ops import reference
from shflbw.ops.dispatch import eager_op, use_triton

_STATS_BYTES = 8  # float32 sum and sum of squares per token


def stats_rows(dtype: torch.dtype) -> int:
    """Rows of ``dtype`` that hold a token's float32 (sum, sum of squares)."""
    size = dtype.itemsize
    if _STATS_BYTES % size:
        raise ValueError(f"no LayerNorm-pending layout for {dtype}")
    return _STATS_BYTES // size


def pending_buffer(m: int, t: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(buffer [M + r, T], s [M, T], zeroed float32 statistics [2, T]) of a new pending tensor."""
    r = stats_rows(dtype)
    if (m * t * dtype.itemsize) % 4:
        raise ValueError(f"a LayerNorm-pending tensor needs M * T * element size divisible by 4 (M = {m}, T = {t})")
    buf = torch.empty(m + r, t, dtype=dtype, device=device)
    stats = buf[m:].reshape(-1).view(torch.float32).view(2, t)
    stats.zero_()
    return buf, buf[:m], stats


def as_pending(buf: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    """The (..., M + r) token-major shaped view of a pending buffer [M + r, T]."""
    return buf.t().reshape(*lead, buf.shape[0])


def split_pending(x: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(s [M, T], statistics [2, T] float32) of a LayerNorm-pending tensor of M features (views)."""
    r = stats_rows(x.dtype)
    if x.shape[-1] != m + r:
        raise ValueError(f"a LayerNorm-pending tensor of {m} features has {m + r} columns, got {x.shape[-1]}")
    buf = x.reshape(-1, m + r).t()
    t = buf.shape[1]
    if not buf.is_contiguous() or (buf.storage_offset() + m * t) * x.element_size() % 4:
        raise ValueError("not a LayerNorm-pending tensor: it must be the untouched view shflbw returned "
                         "(a copy, a slice of its tokens or its transpose loses the statistics' layout)")
    return buf[:m], buf[m:].reshape(-1).view(torch.float32).view(2, t)


def token_stats_ref(stats: torch.Tensor, m: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (mean, 1/std) from the [2, T] sums, as kernels/spmm.py ``token_stats`` computes them."""
    mean = stats[0] / m
    var = (stats[1] / m - mean * mean).clamp_min(0.0)
    return mean, torch.rsqrt(var + eps)


def normalized(x: torch.Tensor, m: int, eps: float, weight=None, bias=None) -> torch.Tensor:
    """LayerNorm of a pending tensor, token-major (..., M), in its dtype (gain and shift if given)."""
    s, stats = split_pending(x, m)
    mean, rs = token_stats_ref(stats, m, eps)
    y = (s.float() - mean) * rs  # [M, T]
    if weight is not None:
        y = y * weight.float()[:, None] + bias.float()[:, None]
    return y.t().to(x.dtype).reshape(*x.shape[:-1], m)


def fill_pending(h: torch.Tensor) -> torch.Tensor:
    """The pending tensor of token-major values h (..., M): h as stored, and its float32 sums."""
    m = h.shape[-1]
    h2 = h.reshape(-1, m)
    buf, s, stats = pending_buffer(m, h2.shape[0], h.dtype, h.device)
    s.copy_(h2.t())
    q = h2.float()
    stats[0] = q.sum(1)
    stats[1] = (q * q).sum(1)
    return as_pending(buf, h.shape[:-1])


@eager_op("shflbw::linear_add_stats")
def linear_add_stats_op(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    out_features: int,
) -> torch.Tensor:
    """s = x @ W^T + bias + residual as a LayerNorm-pending tensor (..., M + r)."""
    if use_triton(x, values.shape[1]):
        from shflbw.kernels.addnorm import linear_add_stats

        return linear_add_stats(x, values, col_idx, group_ptr, perm, bias, residual, out_features)
    return fill_pending(reference.linear_fwd_ref(x, values, col_idx, group_ptr, perm, bias, out_features) + residual)


@linear_add_stats_op.register_fake
def _(x, values, col_idx, group_ptr, perm, bias, residual, out_features):
    return reference.feature_major_view(x.new_empty(*x.shape[:-1], out_features + stats_rows(x.dtype)))


def fold_gain(values: torch.Tensor, col_idx: torch.Tensor, group_ptr: torch.Tensor, bias_grouped: torch.Tensor | None,
              gain: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W' values, c, bias') for a layer reading LayerNorm(s) that will read s instead.

    W' = W diag(gain) (each kept value times its column's gain, rounded to W's dtype), c = rowsum(W')
    in float32 over those rounded values, and bias' = bias + W shift, all in W's group order (rows of
    a padded G*V output)."""
    v = values.shape[1]
    cols = col_idx.long()
    w = values.float()
    folded = (w * gain.float()[cols][:, None]).to(values.dtype)
    n_groups = group_ptr.numel() - 1
    gid = group_ids(group_ptr)
    c = torch.zeros(n_groups, v, dtype=torch.float32, device=values.device)
    c.index_add_(0, gid, folded.float())
    wb = torch.zeros(n_groups, v, dtype=torch.float32, device=values.device)
    wb.index_add_(0, gid, w * shift.float()[cols][:, None])
    b = wb.reshape(-1)
    if bias_grouped is not None:
        b = b + bias_grouped.float()
    return folded, c.reshape(-1), b.to(values.dtype)
