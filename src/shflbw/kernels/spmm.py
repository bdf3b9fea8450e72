"""Feature-major Shfl-BW SpMM kernel: C[M, N] = W[M, K] @ B[K, N], the paper's layout.

One program computes one row group's [V, BN] output tile: it streams the group's value panel
([BK, V] tiles, 16-byte rows) and gathers the matching rows of B by column index (each row a
contiguous run of BN elements), feeds the tensor cores, and stores the V rows through the
permutation. The output strides are free, so the same kernel writes a token-major output
(C^T, T x M) for ``shflbw.linear`` at no extra cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import functools
import os

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class SpmmConfig:
    block_n: int = 128
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 3
    # > 0: the persistent kernel (kernels/spmm_persistent.py) with this many programs per SM;
    # 0: one program per [V, BN] tile.
    programs_per_sm: int = 0
    # Register cap per thread (ptxas -maxrregcount), None: the compiler's choice. Fewer registers
    # fit more programs per SM (65536 / (128 threads x regs)).
    maxnreg: int | None = None


def dot_precision(dtype: torch.dtype) -> str:
    # fp32 operands: exact products (the tf32 default costs ~3e-4 relative error).
    return "ieee" if dtype == torch.float32 or interpreter_upcast(dtype) else "tf32"


def interpreter_upcast(dtype: torch.dtype) -> bool:
    """Whether dot operands must be cast to fp32 first.

    Triton 3.9's CPU interpreter returns garbage for tl.dot on bf16 operands (relative error
    ~1e10 on a 16 x 16 product, seen here; fp16 and fp32 are right), so under TRITON_INTERPRET
    the kernels cast bf16 tiles to fp32 before the dot. Compiled GPU kernels never do.
    """
    return dtype == torch.bfloat16 and _interpreting()


@functools.cache
def _interpreting() -> bool:
    # Read once: the interpreter is chosen when Triton is imported, and os.environ costs per call.
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _gather_dot(acc, vals_ptr, cols_ptr, b_ptr, kk, end, offs_v, offs_n, n_ok, stride_bk, stride_bn,
                V: tl.constexpr, MASK_K: tl.constexpr, MASK_N: tl.constexpr, IDX64: tl.constexpr,
                DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc += W[:, kk]^T-tile @ B[cols[kk], offs_n]: one [BK] step of a group's kept vectors."""
    k_ok = kk < end
    if MASK_K:
        cols = tl.load(cols_ptr + kk, mask=k_ok, other=0)
    else:
        cols = tl.load(cols_ptr + kk)
    if IDX64:
        cols = cols.to(tl.int64)
        kk = kk.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    a_ptrs = vals_ptr + kk[:, None] * V + offs_v[None, :]  # [BK, V]
    b_ptrs = b_ptr + cols[:, None] * stride_bk + offs_n[None, :] * stride_bn  # [BK, BN]
    if MASK_K:
        a = tl.load(a_ptrs, mask=k_ok[:, None], other=0.0)
        if MASK_N:
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        else:
            b = tl.load(b_ptrs, mask=k_ok[:, None], other=0.0)
    else:
        a = tl.load(a_ptrs)
        if MASK_N:
            b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
        else:
            b = tl.load(b_ptrs)
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return acc + tl.dot(tl.trans(a), b, input_precision=DOT_PRECISION)  # [V, BN]


@triton.jit
def _out_rows(g, perm_ptr, M, offs_v, V: tl.constexpr, PERMUTE_OUT: tl.constexpr):
    """The output rows of group g's tile (int64) and which of them exist."""
    row_pos = g * V + offs_v
    row_ok = row_pos < M
    if PERMUTE_OUT:
        rows = tl.load(perm_ptr + row_pos, mask=row_ok, other=0).to(tl.int64)
    else:
        # Group order: contiguous rows the compiler can see, so a token-major store is coalesced.
        # Scattering rows through perm into a token-major output cost 2.7x the whole kernel
        # (4096^2, 4096 tokens, 75 %: 289 us against 108 us feature-major, H200).
        rows = row_pos.to(tl.int64)
    return rows, row_ok


TANH_GELU = tl.constexpr(3)  # kernel-only activation code: GELU evaluated through tanh.approx.f32


def kernel_activation(activation: int, out_dtype: torch.dtype, exact_gelu: bool = False) -> int:
    """The epilogue's activation code for an op's ``activation`` (shflbw.ops.mlp.ACTIVATIONS).

    GELU (2) into a 16-bit output on the GPU runs as TANH_GELU: the erf form's libdevice erff made
    the epilogue ALU-bound (BERT-large's fc1, 4096 x 1024 at 32768 tokens, 75 %: 361 us against 234
    us with no activation; 259 us through the hardware tanh; prototype/sweep_epilogue.py, H200,
    BENCHMARKS.md session 7). The tanh form is within 4.7e-4 of the erf form and tanh.approx within
    2^-11 relative, so the result moves by at most 1.2e-3 for |x| < 4 and 2.4e-4 x beyond: under the
    rounding of a bf16 / fp16 output except in the negative tail (GELU(-3) = -0.004 +- 7e-4); the
    output's error against float32 exact-GELU math stayed 0.00166 in every case timed. float32
    outputs, the CPU interpreter and ``exact_gelu`` keep the erf form.
    """
    if activation == 2 and not exact_gelu and out_dtype in (torch.float16, torch.bfloat16) and not _interpreting():
        return TANH_GELU.value
    return activation


@triton.jit
def token_stats(stats_ptr, offs_n, n_ok, N, n_features, eps):
    """Each token's LayerNorm mean and 1/std from its [2, N] float32 (sum, sum of squares)."""
    s1 = tl.load(stats_ptr + offs_n, mask=n_ok, other=0.0)
    s2 = tl.load(stats_ptr + N + offs_n, mask=n_ok, other=0.0)
    mean = s1 / n_features
    var = tl.maximum(s2 / n_features - mean * mean, 0.0)
    return mean, 1.0 / tl.sqrt(var + eps)


@triton.jit
def _store_tile(acc, g, offs_v, offs_n, n_ok, M, N, perm_ptr, bias_ptr, res_ptr, out_ptr, stride_om, stride_on,
                stats_ptr, lnc_ptr, n_features, eps,
                V: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
                PERMUTE_OUT: tl.constexpr, NORM_IN: tl.constexpr = False, STATS_OUT: tl.constexpr = False):
    """Epilogue of one [V, BN] tile: (normalise), + bias, + residual, activation, store through the
    permutation (and add the stored values' per-token sums to the statistics).

    NORM_IN: B held un-normalised tokens s and W was folded with the LayerNorm's gain (W' = W diag(g)),
    so W LN(s) = rs * (W's - mean * c) + W beta, c = rowsum(W') at ``lnc_ptr`` and W beta folded into
    the bias; mean and rs come from the [2, N] statistics at ``stats_ptr`` (ops/deferred_norm.py).
    STATS_OUT: add each token's sum and sum of squares over this tile's rows, of the values as
    stored (rounded to the output dtype), into the zeroed [2, N] float32 ``stats_ptr``.
    """
    rows, row_ok = _out_rows(g, perm_ptr, M, offs_v, V, PERMUTE_OUT)
    out_off = rows[:, None] * stride_om + offs_n.to(tl.int64)[None, :] * stride_on
    ok = row_ok[:, None] & n_ok[None, :]
    if NORM_IN:
        mean, rs = token_stats(stats_ptr, offs_n, n_ok, N, n_features, eps)
        c = tl.load(lnc_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        acc = (acc - c[:, None] * mean[None, :]) * rs[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    if HAS_RESIDUAL:
        acc += tl.load(res_ptr + out_off, mask=ok, other=0.0).to(tl.float32)
    if ACTIVATION == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACTIVATION == 2:
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    elif ACTIVATION == TANH_GELU:
        # GELU's tanh form through the hardware tanh (one MUFU op against libdevice's erff: see
        # kernel_activation); compiled GPU kernels only (inline PTX)
        u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
        th = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [u], dtype=tl.float32, is_pure=True, pack=1)
        acc = 0.5 * acc * (1.0 + th)
    y = acc.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + out_off, y, mask=ok)
    if STATS_OUT:
        q = tl.where(ok, y.to(tl.float32), 0.0)
        tl.atomic_add(stats_ptr + offs_n, tl.sum(q, axis=0), mask=n_ok, sem="relaxed")
        tl.atomic_add(stats_ptr + N + offs_n, tl.sum(q * q, axis=0), mask=n_ok, sem="relaxed")


@triton.jit
def spmm_fwd_kernel(
    vals_ptr,  # [nnz, V]
    cols_ptr,  # [nnz] int32
    gptr_ptr,  # [G + 1] int32
    perm_ptr,  # [M] int32
    b_ptr,  # [K, N], any strides
    bias_ptr,  # [M] or dummy
    res_ptr,  # [M, N] at the output's strides, or dummy: added before the activation
    out_ptr,  # [M, N] at (stride_om, stride_on)
    stats_ptr,  # [2, N] float32 token statistics (NORM_IN: read; STATS_OUT: added to), or dummy
    lnc_ptr,  # [M] float32 rowsum(W') for NORM_IN, or dummy
    M,
    N,
    stride_bk,
    stride_bn,
    stride_om,
    stride_on,
    SPLITS,
    n_features,  # NORM_IN: the normalised width (B's rows)
    eps,  # NORM_IN: the LayerNorm's epsilon
    V: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,  # 0: none, 1: relu, 2: gelu (erf form, as F.gelu), 3: TANH_GELU (kernel_activation)
    PERMUTE_OUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    ATOMIC: tl.constexpr,  # split-K: add float32 partial sums into out (bias and activation: the caller's)
    EVEN_N: tl.constexpr,  # N % BN == 0: no token mask on the gathers
    IDX64: tl.constexpr,  # int64 index math (only when an operand has >= 2^31 elements)
    NORM_IN: tl.constexpr = False,  # B is un-normalised: finish a deferred LayerNorm (_store_tile)
    STATS_OUT: tl.constexpr = False,  # add the output's per-token sums to stats_ptr (_store_tile)
):
    # Groups vary fastest: programs running together share one [K, BN] slab of B in L2.
    g = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    start = tl.load(gptr_ptr + g)
    end = tl.load(gptr_ptr + g + 1)
    offs_v = tl.arange(0, V)
    offs_k = tl.arange(0, BK)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_ok = offs_n < N
    acc = tl.zeros([V, BN], dtype=tl.float32)
    # Nsight Compute on the H200 (4096^2, T = 4096, 75 %, V = 64): the integer pipe was the busiest
    # (47.5 %, above the tensor cores), i.e. address and mask arithmetic for the gathers. So the
    # full [BK] steps run unmasked with int32 offsets, and only the group's last partial step is
    # masked. Split s takes every SPLITS-th step (no host-side group sizes: capturable).
    n_full = (end - start) // BK
    for i in range(split, n_full, SPLITS):
        acc = _gather_dot(acc, vals_ptr, cols_ptr, b_ptr, start + i * BK + offs_k, end, offs_v, offs_n, n_ok,
                          stride_bk, stride_bn, V, False, not EVEN_N, IDX64, DOT_PRECISION, UPCAST)
    if (start + n_full * BK < end) & (n_full % SPLITS == split):
        acc = _gather_dot(acc, vals_ptr, cols_ptr, b_ptr, start + n_full * BK + offs_k, end, offs_v, offs_n, n_ok,
                          stride_bk, stride_bn, V, True, not EVEN_N, IDX64, DOT_PRECISION, UPCAST)
    if ATOMIC:
        rows, row_ok = _out_rows(g, perm_ptr, M, offs_v, V, PERMUTE_OUT)
        out_off = rows[:, None] * stride_om + offs_n.to(tl.int64)[None, :] * stride_on
        tl.atomic_add(out_ptr + out_off, acc, mask=row_ok[:, None] & n_ok[None, :], sem="relaxed")
    else:
        _store_tile(acc, g, offs_v, offs_n, n_ok, M, N, perm_ptr, bias_ptr, res_ptr, out_ptr, stride_om, stride_on,
                    stats_ptr, lnc_ptr, n_features, eps, V, HAS_BIAS, HAS_RESIDUAL, ACTIVATION, PERMUTE_OUT,
                    NORM_IN, STATS_OUT)


def needs_int64(*tensors: torch.Tensor) -> bool:
    """Whether some element of these tensors lies 2^31 or more elements past its base pointer."""
    return any(_extent(t) >= 2**31 - 1 for t in tensors)


def _extent(t: torch.Tensor) -> int:
    # Host time counts on eager calls (6 us for three tensors on the H200 machine's CPU with the
    # generic sum): a contiguous tensor's last element is numel - 1 past its base.
    if t.is_contiguous():
        return t.numel() - 1
    return sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride())) if t.numel() else 0


def launch_spmm(
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    out_strides: tuple[int, int],
    config: SpmmConfig,
    permute_out: bool = True,
    activation: int = 0,
    splits: int = 1,
    residual: torch.Tensor | None = None,
    exact_gelu: bool = False,
    norm_in: tuple[torch.Tensor, torch.Tensor, int, float] | None = None,
    stats_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the kernel into ``out`` viewed as M x N with ``out_strides``; B is K x N (any strides).

    ``permute_out=False`` writes rows in group order (row ``g*V + r`` of a padded G*V x N output)
    and adds ``bias`` in that order too: the caller passes a bias already permuted.
    ``activation`` (codes in shflbw.ops.mlp.ACTIVATIONS) is applied after the bias, before the store;
    GELU into a 16-bit output runs through the hardware tanh unless ``exact_gelu`` (kernel_activation).
    ``splits > 1`` splits each group's kept vectors over that many programs, which add float32
    partial sums into a zeroed float32 ``out`` (no bias, no activation: the caller finishes).
    ``residual`` (laid out as ``out``, same strides) is added after the bias, before the activation.
    ``norm_in`` = (stats [2, N] float32, c [M] float32, width, eps): B holds un-normalised tokens of
    a deferred LayerNorm, W and bias were folded with its gain and shift (ops/deferred_norm.py);
    ``stats_out``: a zeroed [2, N] float32 tensor that receives each output token's sum and sum of
    squares. Either runs the one-program-per-tile kernel.
    ``config.programs_per_sm > 0`` runs the persistent kernel (kernels/spmm_persistent.py) instead,
    unless split-K, ``norm_in`` or ``stats_out`` is asked for, or a program would own more than
    MAX_TILES_PER_PROGRAM tiles.
    """
    if splits > 1 and (out.dtype != torch.float32 or bias is not None or activation or residual is not None
                       or norm_in is not None or stats_out is not None):
        raise ValueError("split-K adds float32 partial sums: out must be float32, with no bias, residual, "
                         "activation or LayerNorm statistics")
    if stats_out is not None and activation:
        raise ValueError("stats_out sums the stored values: no activation before them")
    for name, st in (("norm_in statistics", None if norm_in is None else norm_in[0]), ("stats_out", stats_out)):
        if st is not None and (st.dtype != torch.float32 or st.shape != (2, b.shape[1]) or not st.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous float32 [2, {b.shape[1]}] tensor")
    if residual is not None and (residual.shape != out.shape or residual.stride() != out.stride()):
        raise ValueError("residual must have the output's shape and strides")
    activation = kernel_activation(activation, out.dtype, exact_gelu)
    m = perm.numel() if permute_out else (group_ptr.numel() - 1) * values.shape[1]
    n = b.shape[1]
    v = values.shape[1]
    n_groups = group_ptr.numel() - 1
    if config.programs_per_sm and splits == 1 and values.shape[0] and n_groups and norm_in is None and stats_out is None:
        from shflbw.kernels.spmm_persistent import launch_persistent

        if launch_persistent(values, col_idx, group_ptr, perm, b, bias, residual, out, m, out_strides, config,
                             permute_out, activation):
            return out
    grid = (n_groups, triton.cdiv(n, config.block_n), splits)
    spmm_fwd_kernel[grid](
        values,
        col_idx,
        group_ptr,
        perm,
        b,
        bias if bias is not None else values,
        residual if residual is not None else values,
        out,
        norm_in[0] if norm_in is not None else (stats_out if stats_out is not None else out),
        norm_in[1] if norm_in is not None else out,
        m,
        n,
        b.stride(0),
        b.stride(1),
        out_strides[0],
        out_strides[1],
        splits,
        norm_in[2] if norm_in is not None else 1,
        norm_in[3] if norm_in is not None else 0.0,
        V=v,
        BN=config.block_n,
        BK=config.block_k,
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        ACTIVATION=activation,
        PERMUTE_OUT=permute_out,
        DOT_PRECISION=dot_precision(values.dtype),
        UPCAST=interpreter_upcast(values.dtype),
        ATOMIC=splits > 1,
        EVEN_N=n % config.block_n == 0,
        IDX64=needs_int64(values, b, out),  # the residual shares the output's offsets
        NORM_IN=norm_in is not None,
        STATS_OUT=stats_out is not None,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        **launch_options(config),
    )
    return out


def launch_options(config: SpmmConfig) -> dict:
    """Launch keywords beyond warps and stages (the register cap, when one is set)."""
    return {} if config.maxnreg is None else {"maxnreg": config.maxnreg}


def spmm_fwd(values, col_idx, group_ptr, perm, b, out_rows, config: SpmmConfig | None = None) -> torch.Tensor:
    """C = W @ B (feature-major), C is M x N in the original row order."""
    from shflbw.kernels.configs import packed_spmm_config

    out = torch.empty(out_rows, b.shape[1], dtype=b.dtype, device=b.device)
    if out_rows == 0 or b.shape[1] == 0:
        return out
    cfg = config or packed_spmm_config(values, group_ptr, b.shape[1])
    return launch_spmm(values, col_idx, group_ptr, perm, b, None, out, (out.stride(0), out.stride(1)), cfg)
