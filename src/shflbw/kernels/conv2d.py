"""Shfl-BW Conv2d as an implicit GEMM on the batch-innermost layout (C, H, W, N), the paper's choice.

Y[Cout, Ho, Wo, N] = W[Cout, Cin*R*S] @ im2col(X): the virtual im2col matrix is never built. One
program computes one row group's [V, BN] tile of the output, BN positions of the flattened
(ho, wo, n) axis with n innermost; for each kept column j = (c, r, s) of the group it gathers the
input row X[c, ho*sh + r*dh - ph, wo*sw + s*dw - pw, n] over the tile (zero outside the image).
With the batch innermost that row is a contiguous run of N elements per output pixel, so the
gather reads whole runs, as the feature-major linear kernel does (CONTEXT.md: the same kernel
gathering from NCHW ran at 0.05-0.36x of cuDNN, on (C, H, W, N) at 1.0-1.74x). Bias and ReLU are
fused in the epilogue; rows are stored through the permutation (whole runs: coalesced).

Each gathered element's address is a per-column offset (c, r, s) plus a per-position offset
(ho, wo, n), one add per element, and tiles whose windows all lie inside the image run without
bounds tests, as the linear kernel does; only border tiles test each element. Against the
previous kernel, which decoded every element from a flat index with six bounds tests
(this file at commit 2193e14; H200, batch 64, 75 %, V = 64, prototype/sweep_conv.py): geometric mean
over ResNet-50's convs 1.02x -> 1.15x of the best cuDNN, VGG-16's 3x3 1.06x -> 1.48x.
1x1 stride-1 convs run the linear SpMM kernel on the (C, H*W*N) view (conv2d_chwn, below).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from shflbw.kernels.spmm import dot_precision, interpreter_upcast, launch_spmm, needs_int64


@dataclass(frozen=True)
class ConvConfig:
    # The batch size is always compiled in (one compile per batch size, a few seconds each): Triton
    # then sees each tile's batch runs as contiguous and loads them as vectors. H200, batch 64, 75 %,
    # V = 64 (prototype/conv_probe.py, commit 15989b5): ResNet-50 3x3 layers 0.49-0.54x -> 1.25-1.27x
    # of the best cuDNN, 1x1 layers 0.19-0.30x -> 0.94-1.00x, against the batch as a runtime value.
    block_n: int = 128
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 5


@triton.jit
def _conv_step(acc, vals_ptr, cols_ptr, x_ptr, kk, end, offs_v, p_off, hbase, wbase, p_ok, H, W, HWN, WN, DH, DW,
               NB: tl.constexpr, R: tl.constexpr, S: tl.constexpr, V: tl.constexpr, MASK_K: tl.constexpr,
               BORDER: tl.constexpr, IDX64: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc += W[:, kk]^T-tile @ im2col(X)[kk, tile]: one [BK] step of a group's kept (c, r, s) columns.

    The gathered element for column j = (c, r, s) and position p sits at x_ptr + row_off[j] + p_off[p]:
    a per-column offset plus a per-position offset, one add per element as in the linear kernel.
    Only BORDER tiles (some window reaching into the zero padding) pay for per-element bounds.
    """
    k_ok = kk < end
    if MASK_K:
        j = tl.load(cols_ptr + kk, mask=k_ok, other=0)
    else:
        j = tl.load(cols_ptr + kk)
    c = j // (R * S)
    r = (j // S) % R
    s = j % S
    if IDX64:
        c = c.to(tl.int64)
        kk = kk.to(tl.int64)
    row_off = c * HWN + (r * DH) * WN + (s * DW) * NB  # [BK]
    b_ptrs = x_ptr + row_off[:, None] + p_off[None, :]  # [BK, BN]
    a_ptrs = vals_ptr + kk[:, None] * V + offs_v[None, :]  # [BK, V]
    if BORDER:
        hi = hbase[None, :] + (r * DH)[:, None]
        wi = wbase[None, :] + (s * DW)[:, None]
        ok = p_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        if MASK_K:
            ok = ok & k_ok[:, None]
        b = tl.load(b_ptrs, mask=ok, other=0.0)
    elif MASK_K:
        b = tl.load(b_ptrs, mask=k_ok[:, None], other=0.0)
    else:
        b = tl.load(b_ptrs)
    if MASK_K:
        a = tl.load(a_ptrs, mask=k_ok[:, None], other=0.0)
    else:
        a = tl.load(a_ptrs)
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return acc + tl.dot(tl.trans(a), b, input_precision=DOT_PRECISION)


@triton.jit
def conv2d_chwn_kernel(
    vals_ptr,  # [nnz, V]
    cols_ptr,  # [nnz] int32, j = (c * R + r) * S + s
    gptr_ptr,  # [G + 1] int32
    perm_ptr,  # [M] int32
    x_ptr,  # [Cin, H, W, N] contiguous
    bias_ptr,  # [M] or dummy
    res_ptr,  # [M, Ho, Wo, N] contiguous or dummy: added before the ReLU (a residual block's shortcut)
    out_ptr,  # [M, Ho, Wo, N] contiguous
    M,
    H,
    W,
    HO,
    WO,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    NB: tl.constexpr,  # the batch, compiled in: Triton then sees each tile's batch runs as contiguous
    R: tl.constexpr,
    S: tl.constexpr,
    V: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    RELU: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    IDX64: tl.constexpr,  # int64 offsets (only when an operand has >= 2^31 elements)
):
    g = tl.program_id(0)  # groups fastest: programs running together share the same input slab
    pid_n = tl.program_id(1)
    start = tl.load(gptr_ptr + g)
    end = tl.load(gptr_ptr + g + 1)
    positions = HO * WO * NB
    offs_p = pid_n * BN + tl.arange(0, BN)
    p_ok = offs_p < positions
    n = offs_p % NB
    q = offs_p // NB
    hbase = (q // WO) * SH - PH  # [BN]: the window's top-left input pixel
    wbase = (q % WO) * SW - PW
    WN = W * NB
    HWN = H * WN
    if IDX64:
        p_off = hbase.to(tl.int64) * WN + wbase * NB + n
    else:
        p_off = hbase * WN + wbase * NB + n
    # A tile is interior when every window of every position lies inside the image: no bounds
    # checks, unmasked full steps (as the linear kernel). ResNet-50 at 56^2, 3x3: 93 % of pixels.
    inside = p_ok & (hbase >= 0) & (hbase + (R - 1) * DH < H) & (wbase >= 0) & (wbase + (S - 1) * DW < W)
    interior = tl.min(inside.to(tl.int32), axis=0) == 1
    offs_v = tl.arange(0, V)
    offs_k = tl.arange(0, BK)
    acc = tl.zeros([V, BN], dtype=tl.float32)
    if interior:
        n_full = (end - start) // BK
        for i in range(0, n_full):
            acc = _conv_step(acc, vals_ptr, cols_ptr, x_ptr, start + i * BK + offs_k, end, offs_v, p_off, hbase, wbase,
                             p_ok, H, W, HWN, WN, DH, DW, NB, R, S, V, False, False, IDX64, DOT_PRECISION, UPCAST)
        if start + n_full * BK < end:
            acc = _conv_step(acc, vals_ptr, cols_ptr, x_ptr, start + n_full * BK + offs_k, end, offs_v, p_off, hbase,
                             wbase, p_ok, H, W, HWN, WN, DH, DW, NB, R, S, V, True, False, IDX64, DOT_PRECISION, UPCAST)
    else:
        for k0 in range(start, end, BK):
            acc = _conv_step(acc, vals_ptr, cols_ptr, x_ptr, k0 + offs_k, end, offs_v, p_off, hbase, wbase, p_ok, H, W,
                             HWN, WN, DH, DW, NB, R, S, V, True, True, IDX64, DOT_PRECISION, UPCAST)
    row_pos = g * V + offs_v
    row_ok = row_pos < M
    rows = tl.load(perm_ptr + row_pos, mask=row_ok, other=0).to(tl.int64)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    out_off = rows[:, None] * positions + offs_p.to(tl.int64)[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(res_ptr + out_off, mask=row_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & p_ok[None, :])


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
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (Cin, H, W, N) contiguous -> y (Cout, Ho, Wo, N) contiguous; symmetric padding.

    ``residual`` (Cout, Ho, Wo, N), when given, is added after the bias and before the ReLU.
    """
    from shflbw.kernels.configs import conv_config, packed_spmm_config, sm_count
    from shflbw.ops.reference import conv_out_size

    cin, r, s = kernel
    x = x.contiguous()
    _, h, w, nb = x.shape
    ho, wo = conv_out_size(h, w, kernel, stride, padding, dilation)
    out = torch.empty(out_channels, ho, wo, nb, dtype=x.dtype, device=x.device)
    positions = ho * wo * nb
    if residual is not None:
        if residual.shape != out.shape:
            raise ValueError(f"residual must have shape {tuple(out.shape)}, got {tuple(residual.shape)}")
        residual = residual.contiguous()
    if positions == 0 or out_channels == 0:
        return out
    if r == s == 1 and tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and config is None:
        # A 1x1 stride-1 conv on (C, H, W, N) is the feature-major SpMM on the (C, H*W*N) view; the
        # linear kernel (no window decode, no interior test) ran 3-8 % faster on all 11 such ResNet-50
        # layers (prototype/sweep_conv.py, H200, batch 64, 75 %, V = 64; BENCHMARKS.md).
        launch_spmm(values, col_idx, group_ptr, perm, x.view(cin, positions), bias, out.view(out_channels, positions),
                    (positions, 1), packed_spmm_config(values, group_ptr, positions), activation=int(relu),
                    residual=None if residual is None else residual.view(out_channels, positions))
        return out
    cfg = config or conv_config(r * s, group_ptr.numel() - 1, positions, sm_count(x.device))
    grid = (group_ptr.numel() - 1, triton.cdiv(positions, cfg.block_n))
    conv2d_chwn_kernel[grid](
        values, col_idx, group_ptr, perm, x, bias if bias is not None else values,
        residual if residual is not None else values, out,
        out_channels, h, w, ho, wo, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        NB=nb, R=r, S=s, V=values.shape[1], BN=cfg.block_n, BK=cfg.block_k, HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None, RELU=relu,
        DOT_PRECISION=dot_precision(values.dtype), UPCAST=interpreter_upcast(values.dtype),
        IDX64=needs_int64(values, x, out), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out
