"""``shflbw::linear_add_layernorm`` and ``shflbw::add_layernorm``: a transformer sublayer's tail,
``LayerNorm(dense(x) + residual)`` and ``LayerNorm(h + residual)``, with a feature-major result.

Both return a token-major *shaped* tensor whose storage is feature-major (strides (1, T) over the
flattened tokens): an ordinary tensor to any PyTorch op, and free input for the next
``shflbw.linear`` / ``shflbw.mlp``, which would otherwise transpose it (kernels/addnorm.py says why).
The reference path returns the same layout, so fake tensors and real ones agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shflbw.ops import reference
from shflbw.ops.deferred_norm import normalized, split_pending
from shflbw.ops.dispatch import eager_op, use_triton


@eager_op("shflbw::linear_add_layernorm")
def linear_add_layernorm_op(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    out_features: int,
) -> torch.Tensor:
    if use_triton(x, values.shape[1]):
        from shflbw.kernels.addnorm import linear_add_layernorm

        return linear_add_layernorm(x, values, col_idx, group_ptr, perm, bias, residual, ln_weight, ln_bias, eps,
                                    out_features)
    h = reference.linear_fwd_ref(x, values, col_idx, group_ptr, perm, bias, out_features)
    return reference.feature_major_view(F.layer_norm(h + residual, (out_features,), ln_weight, ln_bias, eps))


@linear_add_layernorm_op.register_fake
def _(x, values, col_idx, group_ptr, perm, bias, residual, ln_weight, ln_bias, eps, out_features):
    return reference.feature_major_view(x.new_empty(*x.shape[:-1], out_features))


@eager_op("shflbw::add_layernorm")
def add_layernorm_op(h: torch.Tensor, residual: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor,
                     eps: float, res_weight: torch.Tensor | None = None, res_bias: torch.Tensor | None = None,
                     res_eps: float = 0.0) -> torch.Tensor:
    """``res_weight`` given: the residual is LayerNorm-pending (ops/deferred_norm.py) and
    LayerNorm(residual; res_weight, res_bias, res_eps) is what gets added."""
    m = h.shape[-1]
    if use_triton(h, 16):
        from shflbw.kernels.addnorm import add_layernorm_fm

        if res_weight is not None:
            s, stats = split_pending(residual, m)
            out = add_layernorm_fm(h.reshape(-1, m).t(), s, ln_weight, ln_bias, eps,
                                   residual_norm=(stats, res_weight, res_bias, res_eps))
        else:
            out = add_layernorm_fm(h.reshape(-1, m).t(), residual.reshape(-1, m).t(), ln_weight, ln_bias, eps)
        return out.t().reshape(h.shape)
    if res_weight is not None:
        residual = normalized(residual, m, res_eps, res_weight, res_bias)
    return reference.feature_major_view(F.layer_norm(h + residual, (m,), ln_weight, ln_bias, eps))


@add_layernorm_op.register_fake
def _(h, residual, ln_weight, ln_bias, eps, res_weight=None, res_bias=None, res_eps=0.0):
    return reference.feature_major_view(h.new_empty(h.shape))
