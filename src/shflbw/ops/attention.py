"""``shflbw::qkv_attention``: a BERT-style self-attention's projections and softmax attention, feature-major.

x [B, S, K] -> softmax(Q K^T * scale + mask) V per head, with [Q, K, V] = one packed Shfl-BW linear of
x with 3 * out_features rows (the three projections stacked, ``ShflBWMatrix.stack_rows``); the
optional mask is [B, 1 or H, S, S], boolean (True attends) or additive float.
The result has the token-major shape [B, S, H * D] but feature-major storage (strides (1, B * S) over
the flattened tokens), like ``shflbw::linear_add_layernorm``: the output projection after it reads
it without a transpose. On the GPU: x is transposed once (free when the previous sublayer's tail
handed it over feature-major), one SpMM writes Q, K and V as row blocks of one [3 * H * D, T]
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
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    heads: int,
    scale: float,
    out_features: int,
) -> torch.Tensor:
    # The attention kernel tiles a head's features with tl.arange and feeds them to tl.dot: a power
    # of two >= 16, the same rule use_triton applies to V; other head sizes take the reference path.
    head = out_features // heads
    if head >= 16 and use_triton(x, head) and use_triton(x, values.shape[1]):
        from shflbw.kernels.qkv_attention import qkv_attention

        return qkv_attention(x, (values, col_idx, group_ptr, perm, bias), attn_mask, heads, scale, out_features)
    b, s, _ = x.shape
    qkv = reference.linear_fwd_ref(x, values, col_idx, group_ptr, perm, bias, 3 * out_features).float()
    q, k, v = (t.reshape(b, s, heads, -1).transpose(1, 2) for t in qkv.split(out_features, dim=-1))
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        attn_mask = attn_mask.float()
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    ctx = ctx.transpose(1, 2).reshape(b, s, out_features)
    return reference.feature_major_view(ctx.to(x.dtype))


@qkv_attention_op.register_fake
def _(x, values, col_idx, group_ptr, perm, bias, attn_mask, heads, scale, out_features):
    return reference.feature_major_view(x.new_empty(*x.shape[:-1], out_features))
