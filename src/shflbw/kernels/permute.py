"""Put the columns of a group-order token-major output back in the original row order.

out[t, j] = src[t, inv_perm[j]] (+ bias[j]): each program reads a [BT, BM] tile gathered along
the (L2-resident) rows of src and writes a coalesced tile of out. Gathering on the read side
is the cheap direction; scattering the kernel's stores through the permutation was not (see
kernels/spmm.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def unpermute_cols_kernel(
    src_ptr,  # [T, Mp] group order, row stride stride_src
    inv_ptr,  # [M] int32: position of original row j in group order
    bias_ptr,  # [M] or dummy
    out_ptr,  # [T, M] contiguous
    T,
    M,
    stride_src,
    BT: tl.constexpr,
    BM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_t = tl.program_id(1)
    offs_t = (pid_t * BT + tl.arange(0, BT)).to(tl.int64)
    offs_m = pid_m * BM + tl.arange(0, BM)
    m_ok = offs_m < M
    ok = (offs_t < T)[:, None] & m_ok[None, :]
    src_cols = tl.load(inv_ptr + offs_m, mask=m_ok, other=0).to(tl.int64)
    tile = tl.load(src_ptr + offs_t[:, None] * stride_src + src_cols[None, :], mask=ok, other=0.0)  # [BT, BM]
    if HAS_BIAS:
        tile = (tile.to(tl.float32) + tl.load(bias_ptr + offs_m, mask=m_ok, other=0.0).to(tl.float32)[None, :]).to(
            out_ptr.dtype.element_ty
        )
    tl.store(out_ptr + offs_t[:, None] * M + offs_m[None, :].to(tl.int64), tile, mask=ok)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(perm)
    inv[perm.long()] = torch.arange(perm.numel(), device=perm.device, dtype=perm.dtype)
    return inv


def unpermute_cols(
    src: torch.Tensor, inv_perm: torch.Tensor, bias: torch.Tensor | None, block_t: int = 32, block_m: int = 128
) -> torch.Tensor:
    t = src.shape[0]
    m = inv_perm.numel()
    out = torch.empty(t, m, dtype=src.dtype, device=src.device)
    grid = (triton.cdiv(m, block_m), triton.cdiv(t, block_t))
    unpermute_cols_kernel[grid](
        src, inv_perm, bias if bias is not None else src, out, t, m, src.stride(0), BT=block_t, BM=block_m, HAS_BIAS=bias is not None
    )
    return out
