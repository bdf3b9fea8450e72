"""Layout copies for the conv kernels: NCHW / channels_last <-> batch-innermost (C, H, W, N).

Every such copy moves the batch axis against a channel or pixel axis: a transpose of [A, N] tiles
(A = the pixels of one channel, or the channels of one pixel), batched over the third axis. PyTorch's
``x.permute(1, 2, 3, 0).contiguous()`` ran far below bandwidth on the H200 (NCHW 64 x 64 x 56^2 ->
CHWN: 64 us; CHWN 64 x 64 x 112^2 -> channels_last: up to 4 ms, BENCHMARKS.md), and under
torch.compile the channels_last entry of a ResNet-50 region made the whole forward 1.5x slower
(benchmarks/run_e2e.py). The tile kernel took 14 us for that entry (64 x 64 x 56^2, against 91 us
for PyTorch's copy: prototype/profile_e2e.py). It reads and writes whole runs on both sides.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def permute_copy_kernel(
    x_ptr,
    y_ptr,
    A,
    N,
    sxa,  # source strides: the tiled axis A, the batch N, the grid's third axis O
    sxn,
    sxo,
    sya,  # destination strides, same axes
    syn,
    syo,
    BA: tl.constexpr,
    BN: tl.constexpr,
):
    pid_a = tl.program_id(0)
    pid_n = tl.program_id(1)
    o = tl.program_id(2).to(tl.int64)
    offs_a = (pid_a * BA + tl.arange(0, BA)).to(tl.int64)
    offs_n = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    ok = (offs_a < A)[:, None] & (offs_n < N)[None, :]
    tile = tl.load(x_ptr + o * sxo + offs_a[:, None] * sxa + offs_n[None, :] * sxn, mask=ok)
    tl.store(y_ptr + o * syo + offs_a[:, None] * sya + offs_n[None, :] * syn, tile, mask=ok)


def _chw_strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(stride N, stride C, stride of the merged H*W axis) of a logical NCHW tensor, or None when
    its H and W axes cannot be merged into one (then the caller copies with PyTorch)."""
    s_n, s_c, s_h, s_w = t.stride()
    if t.shape[2] > 1 and s_h != t.shape[3] * s_w:
        return None
    return s_n, s_c, s_w


def permute_copy_(dst: torch.Tensor, src: torch.Tensor, block_a: int = 64, block_n: int = 64) -> torch.Tensor:
    """dst.copy_(src) for two logical NCHW tensors of the same shape whose layouts put the batch
    innermost on one side (CHWN storage) and a channel or pixel axis innermost on the other."""
    n, c, h, w = src.shape
    hw = h * w
    xs, ys = _chw_strides(src), _chw_strides(dst)
    if xs is None or ys is None or src.numel() == 0:
        return dst.copy_(src)
    # Tile the channels when either side has them innermost (channels_last), else the pixels.
    if xs[1] == 1 or ys[1] == 1:
        a, o, ax, ox, ay, oy = c, hw, xs[1], xs[2], ys[1], ys[2]
    else:
        a, o, ax, ox, ay, oy = hw, c, xs[2], xs[1], ys[2], ys[1]
    if o > 65535:  # the grid's third axis
        return dst.copy_(src)
    grid = (triton.cdiv(a, block_a), triton.cdiv(n, block_n), o)
    permute_copy_kernel[grid](src, dst, a, n, ax, xs[0], ox, ay, ys[0], oy, BA=block_a, BN=block_n)
    return dst


def to_chwn(x: torch.Tensor) -> torch.Tensor:
    """A logical NCHW tensor (any layout) as a contiguous (C, H, W, N) copy."""
    n, c, h, w = x.shape
    out = torch.empty(c, h, w, n, dtype=x.dtype, device=x.device)
    permute_copy_(out.permute(3, 0, 1, 2), x)
    return out


def from_chwn(y: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A contiguous (C, H, W, N) tensor as an (N, C, H, W) tensor in ``memory_format``."""
    c, h, w, n = y.shape
    out = torch.empty(n, c, h, w, dtype=y.dtype, device=y.device).contiguous(memory_format=memory_format)
    return permute_copy_(out, y.permute(3, 0, 1, 2))
