"""Bidirectional softmax attention on feature-major Q, K and V, with a feature-major result.

Why: in a BERT-style layer the three projections and the output projection run feature-major
(the SpMM kernels' layout), but PyTorch's SDPA wants [B, H, S, D] with D contiguous, so each layer
paid three transposes back for Q, K and V and one for the context (3.3 ms of a 30.4 ms BERT-large
forward on the H200, BENCHMARKS.md). Here Q, K and V are read where the SpMMs wrote them: rows of
one [3 * H * D, T] buffer, token t = b * S + s contiguous along each row, so a [D, BM] tile of a
head is D rows of BM contiguous tokens (coalesced). The context is written the same way, [H * D, T],
which the output projection reads without a transpose.

The math runs query-major, as flash attention does: scores = Q K^T ([BM, BN]) with the running
maximum and sum of the online softmax, and ctx += P V ([BM, D]) with P kept in registers as the A
operand; Q and V enter transposed (the tiles load as [D, BM] / [D, BN]) and the context is stored
transposed. A first, key-major version (scores^T = K Q^T, ctx^T += V P^T, every operand as loaded)
sent P^T through shared memory as the B operand and needed 168 registers against 125 (ptxas,
sm_90a, 64 / 64 / 4 warps): BERT-large's 256 x 128 tokens took 157 us a layer against 91 us now
and 74 us for cuDNN's SDPA on token-major Q, K, V (prototype/sweep_attention.py, H200,
BENCHMARKS.md session 7). An optional mask [B, 1 or H, S, S] (any strides, 0 for broadcast dimensions)
is boolean (True: attend), as Hugging Face passes it for padded batches, or additive float; a query
row with every key masked gets zeros, as PyTorch's SDPA gives. No dropout (inference).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from shflbw.kernels.spmm import dot_precision, interpreter_upcast


@triton.jit
def attention_fm_kernel(
    qkv_ptr,  # [3 * H * D, T] at (stride_row, 1): Q rows, then K rows, then V rows
    out_ptr,  # [H * D, T] contiguous
    mask_ptr,  # [B, 1 or H, S, S] at (stride_mb, stride_mh, stride_mq, stride_mk), or dummy
    S,
    T,
    stride_row,
    qk_scale,  # softmax scale * log2(e): the kernel exponentiates with exp2
    stride_mb,
    stride_mh,
    stride_mq,
    stride_mk,
    H: tl.constexpr,
    D: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    MASK: tl.constexpr,  # 0: none, 1: boolean (True attends), 2: additive float
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_d = tl.arange(0, D)
    offs_m = pid_m * BM + tl.arange(0, BM)  # query positions in the sequence
    m_ok = offs_m < S
    tok0 = b.to(tl.int64) * S
    rows_q = (h * D + offs_d).to(tl.int64) * stride_row
    rows_k = ((H + h) * D + offs_d).to(tl.int64) * stride_row
    rows_v = ((2 * H + h) * D + offs_d).to(tl.int64) * stride_row
    q = tl.load(qkv_ptr + rows_q[:, None] + (tok0 + offs_m)[None, :], mask=m_ok[None, :], other=0.0)  # [D, BM]
    if UPCAST:
        q = q.to(tl.float32)
    mask_base = mask_ptr + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh
    # scores = Q K^T [BM, BN] and ctx += P V [BM, D]: P stays in registers as the A operand of the
    # second product; Q and V enter transposed (MN-major shared-memory operands)
    qt = tl.trans(q)  # [BM, D]
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, D], dtype=tl.float32)
    for n0 in range(0, S, BN):
        offs_n = n0 + tl.arange(0, BN)
        n_ok = offs_n < S
        k = tl.load(qkv_ptr + rows_k[:, None] + (tok0 + offs_n)[None, :], mask=n_ok[None, :], other=0.0)  # [D, BN]
        v = tl.load(qkv_ptr + rows_v[:, None] + (tok0 + offs_n)[None, :], mask=n_ok[None, :], other=0.0)  # [D, BN]
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(qt, k, input_precision=DOT_PRECISION) * qk_scale  # [BM, BN], log2 units
        if MASK != 0:
            mv = tl.load(mask_base + offs_m.to(tl.int64)[:, None] * stride_mq + offs_n.to(tl.int64)[None, :] * stride_mk,
                         mask=m_ok[:, None] & n_ok[None, :], other=0)  # [BM, BN]
            if MASK == 1:
                s = tl.where(mv != 0, s, float("-inf"))
            else:
                s = s + mv.to(tl.float32) * 1.4426950408889634
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key left so far
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])  # [BM, BN]
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), tl.trans(v), input_precision=DOT_PRECISION)  # [BM, D]
        m_i = m_new
    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # a fully masked row has acc = 0: it stays 0
    ctx = tl.trans(acc)  # [D, BM]
    out_rows = (h * D + offs_d).to(tl.int64) * T
    tl.store(out_ptr + out_rows[:, None] + (tok0 + offs_m)[None, :], ctx.to(out_ptr.dtype.element_ty),
             mask=m_ok[None, :])


def attention_fm(qkv: torch.Tensor, batch: int, seq: int, heads: int, scale: float,
                 mask: torch.Tensor | None = None, block_m: int | None = None, block_n: int | None = None,
                 num_warps: int = 4, num_stages: int | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale [masked]) V per head, for Q, K, V the three row blocks of ``qkv``
    [3 * H * D, B * S] (unit stride along tokens); returns the context feature-major, [H * D, B * S].
    ``mask``: [B, 1 or H, S, S] (broadcast dimensions of size 1 allowed), boolean or additive float."""
    rows, t = qkv.shape
    if rows % (3 * heads) or t != batch * seq:
        raise ValueError(f"qkv must be [3 * heads * D, batch * seq], got {tuple(qkv.shape)} for {heads} heads, "
                         f"batch {batch}, seq {seq}")
    d = rows // (3 * heads)
    if d < 16 or d & (d - 1):
        raise ValueError(f"head size must be a power of two >= 16, got {d}")
    if qkv.stride(1) != 1:
        raise ValueError("qkv must be contiguous along tokens")
    mode, strides = 0, (0, 0, 0, 0)
    if mask is not None:
        mask = check_mask(mask, batch, heads, seq)
        mode = 1 if mask.dtype == torch.bool else 2
        strides = tuple(st if n > 1 else 0 for n, st in zip(mask.shape, mask.stride()))
    out = torch.empty(heads * d, t, dtype=qkv.dtype, device=qkv.device)
    if t == 0:
        return out
    bm = block_m or min(64, max(16, triton.next_power_of_2(seq)))
    bn = block_n or min(64, max(16, triton.next_power_of_2(seq)))
    if num_stages is None:
        # H200, BERT-large's 256 x 128 tokens at BM = BN = 64: 3 stages 91 us against 100 unmasked,
        # 2 stages 118 us against 126 with HF's boolean padding mask
        num_stages = 2 if mask is not None else 3
    grid = (triton.cdiv(seq, bm), batch * heads)
    attention_fm_kernel[grid](
        qkv, out, mask if mask is not None else qkv, seq, t, qkv.stride(0), scale * 1.4426950408889634, *strides,
        H=heads, D=d, BM=bm, BN=bn, MASK=mode, DOT_PRECISION=dot_precision(qkv.dtype),
        UPCAST=interpreter_upcast(qkv.dtype), num_warps=num_warps, num_stages=num_stages,
    )
    return out


def check_mask(mask: torch.Tensor, batch: int, heads: int, seq: int) -> torch.Tensor:
    """The mask as a 4-D [B, 1 or H, S, S] tensor (dimensions of size 1 broadcast), or a ValueError."""
    if mask.dim() != 4 or mask.shape[1] not in (1, heads) or mask.shape[0] not in (1, batch) \
            or mask.shape[2] not in (1, seq) or mask.shape[3] != seq:
        raise ValueError(f"attention mask must be [batch, 1 or heads, seq or 1, seq] = [{batch}, 1|{heads}, {seq}, "
                         f"{seq}], got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(f"attention mask must be boolean or floating point, got {mask.dtype}")
    return mask
