"""A tiled transpose X[R, C] -> Y[C, R] (token-major <-> feature-major), optionally finishing a sum.

PyTorch's ``x.t().contiguous()`` ran at about 0.5 TB/s on an H200 (126 us for 4096 x 4096 bf16,
CONTEXT.md); this tile transpose runs at 3.0-3.7 TB/s (BENCHMARKS.md). The same kernel finishes
the split-K path: it reads the float32 feature-major sums, adds the bias per feature (row of X)
and casts to the output dtype while it transposes, so the finish costs no extra pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def transpose_kernel(
    x_ptr,  # [R, C] at (stride_xr, stride_xc)
    y_ptr,  # [C, R] contiguous, any dtype (cast on store)
    bias_ptr,  # [R] or dummy
    R,
    C,
    stride_xr,
    stride_xc,
    BR: tl.constexpr,
    BC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_r = (pid_r * BR + tl.arange(0, BR)).to(tl.int64)
    offs_c = (pid_c * BC + tl.arange(0, BC)).to(tl.int64)
    r_ok = offs_r < R
    ok = r_ok[:, None] & (offs_c < C)[None, :]
    tile = tl.load(x_ptr + offs_r[:, None] * stride_xr + offs_c[None, :] * stride_xc, mask=ok)  # [BR, BC]
    if HAS_BIAS:
        tile = tile.to(tl.float32) + tl.load(bias_ptr + offs_r, mask=r_ok, other=0.0).to(tl.float32)[:, None]
    tl.store(y_ptr + offs_c[None, :] * R + offs_r[:, None], tile.to(y_ptr.dtype.element_ty), mask=ok)


def transpose(
    x: torch.Tensor,
    block_r: int = 64,
    block_c: int = 64,
    num_warps: int = 4,
    *,
    dtype: torch.dtype | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (R x C, any strides) -> a contiguous C x R copy in ``dtype`` (default x's), plus ``bias[r]``."""
    r, c = x.shape
    if bias is not None and bias.shape != (r,):
        raise ValueError(f"bias must have shape ({r},), got {tuple(bias.shape)}")
    y = torch.empty(c, r, dtype=dtype or x.dtype, device=x.device)
    if r == 0 or c == 0:
        return y
    grid = (triton.cdiv(r, block_r), triton.cdiv(c, block_c))
    transpose_kernel[grid](
        x, y, bias if bias is not None else x, r, c, x.stride(0), x.stride(1),
        BR=block_r, BC=block_c, HAS_BIAS=bias is not None, num_warps=num_warps,
    )
    return y


def feature_major(x2: torch.Tensor) -> torch.Tensor:
    """X^T (K x T, contiguous) for the feature-major kernel: free when x2 is already a transposed
    view of a feature-major buffer (a producer that keeps activations feature-major hands over
    ``out_fm.t()``), else one tiled transpose."""
    xt = x2.t()
    if xt.is_contiguous():
        return xt
    return transpose(x2)
