"""The conv kernel as it was at commit 2193e14, kept only as the 'before' side of an A/B.

prototype/sweep_conv.py times it next to the current kernel (shflbw/kernels/conv2d.py) in one
process. It computed every element's address from the flat position index and checked bounds on
every element of every tile. Not part of the library.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from shflbw.kernels.spmm import dot_precision, interpreter_upcast


@dataclass(frozen=True)
class ConvConfig:
    block_n: int = 128
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 3
    # Compile the batch size in (one compile per batch size, a few seconds each): Triton can then
    # see that each tile's batch runs are contiguous and load them as vectors. H200, batch 64,
    # 75 %, V = 64 (prototype/conv_probe.py): ResNet-50 3x3 layers 0.49-0.54x -> 1.25-1.27x of the
    # best cuDNN, 1x1 layers 0.19-0.30x -> 0.94-1.00x, VGG-16 3x3 1.20-1.23x -> 1.28x.
    batch_constexpr: bool = True


@triton.jit
def conv2d_chwn_kernel(
    vals_ptr,  # [nnz, V]
    cols_ptr,  # [nnz] int32, j = (c * R + r) * S + s
    gptr_ptr,  # [G + 1] int32
    perm_ptr,  # [M] int32
    x_ptr,  # [Cin, H, W, N] contiguous
    bias_ptr,  # [M] or dummy
    out_ptr,  # [M, Ho, Wo, N] contiguous
    M,
    H,
    W,
    NB,  # batch (a constexpr when BATCH_CONST: see ConvConfig.batch_constexpr)
    HO,
    WO,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    R: tl.constexpr,
    S: tl.constexpr,
    V: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    NB_CONST: tl.constexpr,  # the batch size when known at compile time, else 0
):
    if NB_CONST > 0:
        NB = NB_CONST
    g = tl.program_id(0)  # groups fastest: programs running together share the same input slab
    pid_n = tl.program_id(1)
    start = tl.load(gptr_ptr + g)
    end = tl.load(gptr_ptr + g + 1)
    positions = HO * WO * NB
    offs_p = pid_n * BN + tl.arange(0, BN)
    p_ok = offs_p < positions
    n = offs_p % NB
    q = offs_p // NB
    hbase = (q // WO) * SH - PH  # [BN]
    wbase = (q % WO) * SW - PW
    offs_v = tl.arange(0, V)
    offs_k = tl.arange(0, BK)
    acc = tl.zeros([V, BN], dtype=tl.float32)
    for k0 in range(start, end, BK):
        kk = k0 + offs_k
        k_ok = kk < end
        j = tl.load(cols_ptr + kk, mask=k_ok, other=0)
        c = j // (R * S)
        r = (j // S) % R
        s = j % S
        hi = hbase[None, :] + (r * DH)[:, None]  # [BK, BN]
        wi = wbase[None, :] + (s * DW)[:, None]
        ok = k_ok[:, None] & p_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        src = ((c.to(tl.int64)[:, None] * H + hi) * W + wi) * NB + n[None, :]
        b = tl.load(x_ptr + src, mask=ok, other=0.0)  # [BK, BN]
        a = tl.load(vals_ptr + kk.to(tl.int64)[:, None] * V + offs_v[None, :], mask=k_ok[:, None], other=0.0)  # [BK, V]
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc += tl.dot(tl.trans(a), b, input_precision=DOT_PRECISION)
    row_pos = g * V + offs_v
    row_ok = row_pos < M
    rows = tl.load(perm_ptr + row_pos, mask=row_ok, other=0).to(tl.int64)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    out_ptrs = out_ptr + rows[:, None] * positions + offs_p.to(tl.int64)[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & p_ok[None, :])


def conv2d_chwn(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_channels: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    relu: bool = False,
    config: ConvConfig | None = None,
) -> torch.Tensor:
    """x (Cin, H, W, N) contiguous -> y (Cout, Ho, Wo, N) contiguous; symmetric padding."""
    from shflbw.ops.reference import conv_out_size

    cin, r, s = kernel
    _, h, w, nb = x.shape
    ho, wo = conv_out_size(h, w, kernel, stride, padding, dilation)
    out = torch.empty(out_channels, ho, wo, nb, dtype=x.dtype, device=x.device)
    positions = ho * wo * nb
    if positions == 0 or out_channels == 0:
        return out
    cfg = config or ConvConfig(block_n=128 if positions >= 1024 else 64)
    grid = (group_ptr.numel() - 1, triton.cdiv(positions, cfg.block_n))
    conv2d_chwn_kernel[grid](
        values, col_idx, group_ptr, perm, x.contiguous(), bias if bias is not None else values, out,
        out_channels, h, w, nb, ho, wo, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        R=r, S=s, V=values.shape[1], BN=cfg.block_n, BK=cfg.block_k, HAS_BIAS=bias is not None, RELU=relu,
        DOT_PRECISION=dot_precision(values.dtype), UPCAST=interpreter_upcast(values.dtype),
        NB_CONST=nb if cfg.batch_constexpr else 0, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
