"""The sparse MLP block on the GPU: transpose, fc1 (+bias, activation) in group order, fc2, transpose back."""

from __future__ import annotations

import dataclasses

import torch

from shflbw.kernels import configs
from shflbw.kernels.configs import DECODE_MAX_TOKENS, packed_spmm_config
from shflbw.kernels.spmm import SpmmConfig, launch_spmm
from shflbw.kernels.transpose import feature_major, transpose
from shflbw.ops.reference import feature_major_view


def mlp_fwd(x, values1, col_idx1, group_ptr1, perm1, bias1_grouped, values2, col_idx2_folded, group_ptr2, perm2, bias2,
            out_features: int, activation: int, config: SpmmConfig | None = None,
            feature_major_out: bool = False, norm_in=None) -> torch.Tensor:
    """``feature_major_out``: return the (..., M2) result as a view of its feature-major buffer (no
    transpose back; for a consumer that reads it feature-major, kernels/addnorm.py).
    ``norm_in`` (stats, c, width, eps): x holds the un-normalised input of a deferred LayerNorm,
    already feature-major, and fc1 finishes the norm in its epilogue (more than DECODE_MAX_TOKENS
    tokens; ops/deferred_norm.py)."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    t = x2.shape[0]
    if t == 0:
        return x.new_zeros(*x.shape[:-1], out_features)
    hidden_padded = (group_ptr1.numel() - 1) * values1.shape[1]
    if t <= DECODE_MAX_TOKENS and norm_in is None:
        # Weight-bound: the decode kernel per layer (one launch each) beats transposing tiny
        # activations; fc1 writes group order (identity placement), fc2 reads the folded columns.
        from shflbw.kernels.linear import linear_fwd
        from shflbw.ops.mlp import ACT_FN

        ident = torch.arange(hidden_padded, dtype=perm1.dtype, device=perm1.device)
        h = linear_fwd(x2, values1, col_idx1, group_ptr1, ident, bias1_grouped, hidden_padded)
        h = ACT_FN[activation](h.float()).to(x.dtype)
        out = linear_fwd(h, values2, col_idx2_folded, group_ptr2, perm2, bias2, out_features)
        out = out.reshape(*x.shape[:-1], out_features)
        return feature_major_view(out) if feature_major_out else out
    cfg1 = config or packed_spmm_config(values1, group_ptr1, t)
    if norm_in is not None and config is None:  # the norm epilogue's registers (configs.NORM_IN_NUM_WARPS)
        cfg1 = dataclasses.replace(cfg1, num_warps=configs.NORM_IN_NUM_WARPS)
    cfg2 = config or packed_spmm_config(values2, group_ptr2, t)
    xt = feature_major(x2)  # [K, T]
    h = torch.empty(hidden_padded, t, dtype=x.dtype, device=x.device)  # feature-major, group order
    launch_spmm(values1, col_idx1, group_ptr1, perm1, xt, bias1_grouped, h, (t, 1), cfg1, permute_out=False,
                activation=activation, norm_in=norm_in)
    out_fm = torch.empty(out_features, t, dtype=x.dtype, device=x.device)
    launch_spmm(values2, col_idx2_folded, group_ptr2, perm2, h, bias2, out_fm, (t, 1), cfg2)
    if feature_major_out:
        return out_fm.t().reshape(*x.shape[:-1], out_features)
    return transpose(out_fm).reshape(*x.shape[:-1], out_features)
