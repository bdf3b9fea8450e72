"""Persistent feature-major Shfl-BW SpMM: a fixed number of programs walk every [V, BN] tile.

Why: a program of the one-tile kernel (kernels/spmm.py) fills its cp.async pipeline, runs the
group's [BK] steps and drains before the next program starts. With short reductions that fill and
drain is much of the time: on the H200, 75 %, V = 64, T = 32768, M x K = 4096 x 1024 (8 steps a
group) ran at 1.75x of cuBLAS against 2.07x for 1024 x 4096 (32 steps), the same flops and bytes
(BENCHMARKS.md, short-K sweep). Here each program runs one flat loop over the steps of all its
tiles (tile p, p + P, p + 2P, ..., groups fastest, as the one-tile grid), so the pipeline keeps
prefetching the next tile's first steps while the current tile's last steps and epilogue run.

Triton's own nested-loop flattening (tl.range(flatten=True)) only fuses inner loops whose bounds do
not depend on the outer loop; a group's step count does, so the loop is flattened by hand: the step
counter ``ki`` wraps at the current tile's step count and a new tile's group bounds are read then.
"""

from __future__ import annotations

import triton
import triton.language as tl

from shflbw.kernels.spmm import (SpmmConfig, _store_tile, dot_precision, interpreter_upcast, launch_options,
                                 needs_int64)

# Tiles one program may own: its step count is summed over a vector of this many tiles (beyond it
# launch_spmm keeps the one-tile kernel).
MAX_TILES_PER_PROGRAM = 1024


@triton.jit
def spmm_persistent_kernel(
    vals_ptr,  # [nnz, V], nnz >= 1
    cols_ptr,  # [nnz] int32
    gptr_ptr,  # [G + 1] int32
    perm_ptr,  # [M] int32
    b_ptr,  # [K, N], any strides
    bias_ptr,  # [M] or dummy
    res_ptr,  # [M, N] at the output's strides, or dummy
    out_ptr,  # [M, N] at (stride_om, stride_on)
    M,
    N,
    nnz,
    n_groups,
    stride_bk,
    stride_bn,
    stride_om,
    stride_on,
    V: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    MAX_TILES: tl.constexpr,  # a power of two >= this program's tile count
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    PERMUTE_OUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    EVEN_N: tl.constexpr,
    IDX64: tl.constexpr,
):
    pid = tl.program_id(0)
    progs = tl.num_programs(0)
    n_tiles = n_groups * tl.cdiv(N, BN)
    # This program's step count: every tile it owns takes ceil(kept / BK) steps, at least one (an
    # empty group's tile still stores its bias, or zeros).
    mine = pid + progs * tl.arange(0, MAX_TILES)
    own = mine < n_tiles
    g_mine = mine % n_groups
    kept = tl.load(gptr_ptr + g_mine + 1, mask=own, other=0) - tl.load(gptr_ptr + g_mine, mask=own, other=0)
    total = tl.sum(tl.where(own, tl.maximum(tl.cdiv(kept, BK), 1), 0))

    offs_v = tl.arange(0, V)
    offs_k = tl.arange(0, BK)
    tile = pid - progs
    ki = -1
    n_steps = 0
    start = 0
    end = 0
    g = 0
    offs_n = tl.arange(0, BN)
    acc = tl.zeros([V, BN], dtype=tl.float32)
    for _ in range(0, total):
        ki += 1
        if ki == n_steps:  # the next tile of this program
            ki = 0
            tile += progs
            g = tile % n_groups
            offs_n = (tile // n_groups) * BN + tl.arange(0, BN)
            start = tl.load(gptr_ptr + g)
            end = tl.load(gptr_ptr + g + 1)
            n_steps = tl.maximum(tl.cdiv(end - start, BK), 1)
        n_ok = offs_n < N
        kk = start + ki * BK + offs_k
        k_ok = kk < end
        # Past the group's end the column index is clamped to a real one (nnz - 1) and the value
        # and gathered row are masked to zero: no out-of-bounds address, no contribution.
        kk = tl.minimum(kk, nnz - 1)
        cols = tl.load(cols_ptr + kk)
        if IDX64:
            cols = cols.to(tl.int64)
            kk = kk.to(tl.int64)
        a = tl.load(vals_ptr + kk[:, None] * V + offs_v[None, :], mask=k_ok[:, None], other=0.0)  # [BK, V]
        b_ptrs = b_ptr + cols[:, None] * stride_bk + offs_n[None, :] * stride_bn  # [BK, BN]
        if EVEN_N:
            b = tl.load(b_ptrs, mask=k_ok[:, None], other=0.0)
        else:
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc += tl.dot(tl.trans(a), b, input_precision=DOT_PRECISION)
        if ki == n_steps - 1:
            _store_tile(acc, g, offs_v, offs_n, n_ok, M, N, perm_ptr, bias_ptr, res_ptr, out_ptr, stride_om, stride_on,
                        out_ptr, out_ptr, 1, 0.0, V, HAS_BIAS, HAS_RESIDUAL, ACTIVATION, PERMUTE_OUT)
            acc = tl.zeros([V, BN], dtype=tl.float32)


def launch_persistent(values, col_idx, group_ptr, perm, b, bias, residual, out, m: int, out_strides: tuple[int, int],
                      config: SpmmConfig, permute_out: bool, activation: int) -> bool:
    """Run the persistent kernel as ``launch_spmm`` describes (nnz >= 1, at least one group);
    False, launching nothing, when a program would own more than MAX_TILES_PER_PROGRAM tiles."""
    from shflbw.kernels.configs import sm_count

    n, n_groups = b.shape[1], group_ptr.numel() - 1
    n_tiles = n_groups * triton.cdiv(n, config.block_n)
    programs = persistent_programs(n_tiles, config.programs_per_sm, sm_count(b.device))
    tiles = max_tiles(n_tiles, programs)
    if tiles > MAX_TILES_PER_PROGRAM:
        return False
    spmm_persistent_kernel[(programs,)](
        values, col_idx, group_ptr, perm, b,
        bias if bias is not None else values,
        residual if residual is not None else values,
        out, m, n, values.shape[0], n_groups, b.stride(0), b.stride(1), out_strides[0], out_strides[1],
        V=values.shape[1], BN=config.block_n, BK=config.block_k, MAX_TILES=tiles,
        HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, ACTIVATION=activation,
        PERMUTE_OUT=permute_out, DOT_PRECISION=dot_precision(values.dtype),
        UPCAST=interpreter_upcast(values.dtype), EVEN_N=n % config.block_n == 0,
        IDX64=needs_int64(values, b, out), num_warps=config.num_warps, num_stages=config.num_stages,
        **launch_options(config),
    )
    return True


def persistent_programs(n_tiles: int, programs_per_sm: int, sms: int | None) -> int:
    """How many programs the persistent kernel launches (on the CPU interpreter, 3: enough to give
    each program several tiles in tests)."""
    return max(1, min(n_tiles, programs_per_sm * sms if sms is not None else 3))


def max_tiles(n_tiles: int, programs: int) -> int:
    return triton.next_power_of_2(triton.cdiv(n_tiles, programs))
