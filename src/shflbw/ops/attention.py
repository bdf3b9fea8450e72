"""``shflbw::qkv_attention``: a BERT-style self-attention's projections and softmax attention, feature-major.

x [B, S, K] -> softmax(Q K^T * scale + mask) V per head, with Q, K, V = three packed Shfl-BW linears
of x; the optional mask is [B, 1 or H, S, S], boolean (True attends) or additive float.
The result has the token-major shape [B, S, H * D] but feature-major storage (strides (1, B * S) over
the flattened tokens), like ``shflbw::linear_add_layernorm``: the output projection after it reads
it without a transpose. On the GPU: x is transposed once (free when the previous sublayer's tail
handed it over feature-major), three SpMMs write Q, K and V as row blocks of one [3 * H * D, T]
buffer, and kernels/attention.py reads them there. The reference path computes the same with the
reference linear and PyTorch's attention, in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shflbw.ops import reference
from shflbw.ops.dispatch import eager_op, use_triton


@eager_op("shflbw::qkv_attention")
def qkv_attention_op(
    x: torch.Tensor,
    q_values: torch.Tensor,
    q_col_idx: torch.Tensor,
    q_group_ptr: torch.Tensor,
    q_perm: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_values: torch.Tensor,
    k_col_idx: torch.Tensor,
    k_group_ptr: torch.Tensor,
    k_perm: torch.Tensor,
    k_bias: torch.Tensor | None,
    v_values: torch.Tensor,
    v_col_idx: torch.Tensor,
    v_group_ptr: torch.Tensor,
    v_perm: torch.Tensor,
    v_bias: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    heads: int,
    scale: float,
    out_features: int,
) -> torch.Tensor:
    packs = ((q_values, q_col_idx, q_group_ptr, q_perm, q_bias), (k_values, k_col_idx, k_group_ptr, k_perm, k_bias),
             (v_values, v_col_idx, v_group_ptr, v_perm, v_bias))
    # The attention kernel tiles a head's features with tl.arange and feeds them to tl.dot: a power
    # of two >= 16, the same rule use_triton applies to V; other head sizes take the reference path.
    head = out_features // heads
    if head >= 16 and use_triton(x, head) and all(use_triton(x, p[0].shape[1]) for p in packs):
        from shflbw.kernels.qkv_attention import qkv_attention

        return qkv_attention(x, packs, attn_mask, heads, scale, out_features)
    b, s, _ = x.shape
    q, k, v = (reference.linear_fwd_ref(x, *p, out_features).float().view(b, s, heads, -1).transpose(1, 2)
               for p in packs)
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.float()
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    ctx = ctx.transpose(1, 2).reshape(b, s, out_features)
    return reference.feature_major_view(ctx.to(x.dtype))


@qkv_attention_op.register_fake
def _(x, q_values, q_col_idx, q_group_ptr, q_perm, q_bias, k_values, k_col_idx, k_group_ptr, k_perm, k_bias,
      v_values, v_col_idx, v_group_ptr, v_perm, v_bias, attn_mask, heads, scale, out_features):
    return reference.feature_major_view(x.new_empty(*x.shape[:-1], out_features))
