"""Q, K, V projections and attention, feature-major end to end (``shflbw::qkv_attention`` on the GPU)."""

from __future__ import annotations

import torch

from shflbw.kernels.attention import attention_fm
from shflbw.kernels.configs import packed_spmm_config
from shflbw.kernels.spmm import launch_spmm
from shflbw.kernels.transpose import feature_major


def qkv_attention(x: torch.Tensor, pack, mask: torch.Tensor | None, heads: int, scale: float,
                  out_features: int) -> torch.Tensor:
    """x [B, S, K]; ``pack``: (values, col_idx, group_ptr, perm, bias) of Q, K and V stacked,
    3 * ``out_features`` rows; ``mask`` as in kernels/attention.py. Returns [B, S, out_features]
    with feature-major storage."""
    b, s, k = x.shape
    t = b * s
    xt = feature_major(x.reshape(t, k))  # free when x is a feature-major view
    values, col_idx, group_ptr, perm, bias = pack
    qkv = torch.empty(3 * out_features, t, dtype=x.dtype, device=x.device)
    launch_spmm(values, col_idx, group_ptr, perm, xt, bias, qkv, (t, 1), packed_spmm_config(values, group_ptr, t))
    ctx = attention_fm(qkv, b, s, heads, scale, mask=mask)
    return ctx.t().reshape(b, s, out_features)
