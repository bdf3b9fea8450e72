"""Stream-K Shfl-BW linear for few tokens: equal shares of the weight's steps, across row groups.

The split-K decode kernel (decode.py) gives each row group ``splits`` programs; with a power of two
of splits, the programs either under-fill the GPU (11008 x 4096 at 75 %: 344 programs for 528 slots
at 4 per SM) or spill into a second wave. Here the weight is a list of steps (one [BK, V] tile of
one group's kept vectors; an empty group still has one step, so its rows are written) and each of
P programs takes the same number of consecutive steps, whatever groups they belong to. A group
whose steps span several programs is finished by the last of them to arrive, which sums the
partials in program order (deterministic) and re-zeroes the group's counter.

Measured on an H100 (BENCHMARKS.md, session 13, commit f44c2dd): slower than split-K in every case
but one (T = 1, 75 %: 8-10 % behind on the layers of 40M+ weights at 2-6 programs per SM; T = 16:
14-25 % behind), so it is opt-in (DecodeConfig.stream_k); split-K already streams its bytes as fast
as cuBLAS reads the same number of bytes. That version ran one loop over the share's steps with the
flush inside a branch, which kept the T > 1 loop from being software-pipelined (offline compile,
triton 3.6, sm_90a: no async copies, against 5 in split-K's loop). The loop is now split: an outer
loop over the groups the share touches, a branch-free inner loop over each group's steps (5 async
copies, 68 KB of shared memory, as split-K). Measured on an H100 in session 14 (commit a75af41): still
behind split-K, its best setting per case 2-10 % slower as a one-kernel graph and 7-14 % slower per
layer in a graph of 8, at T = 1 and 16.

No host-side table: every program loads the group pointers once and finds its first group from
their prefix sum, then walks the groups. So the launch needs no sync and is capturable. One token
runs on CUDA cores (as the split-K kernel's gemv); more run as [BT, V] tensor-core tiles, each tile
of tokens with its own P programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from shflbw.kernels.decode import DecodeConfig, _value_tile, arrival_counters, last_arrival_sum, token_tile
from shflbw.kernels.spmm import dot_precision, interpreter_upcast

# Each program holds the group pointers of the whole matrix in registers once, at its start.
MAX_GROUPS = 4096


@triton.jit
def _owner(step, S, P):
    """The program whose share [p S / P, (p + 1) S / P) holds ``step`` (P <= S)."""
    return ((step + 1) * P + S - 1) // S - 1


@triton.jit
def linear_decode_streamk_kernel(
    x_ptr,  # [T, K] at (stride_xt, stride_xk)
    vals_ptr,  # [nnz, V]
    cols_ptr,  # [nnz] int32
    gptr_ptr,  # [G + 1] int32
    perm_ptr,  # [M] int32
    bias_ptr,  # [M] or dummy
    out_ptr,  # [T, M] contiguous
    part_ptr,  # float32 [tiles, G + P, BT, V]: group g's share from program p at slot g + p
    lock_ptr,  # int32 [tiles, G] arrival counters, zero between launches
    T,
    G,
    M,
    P,
    stride_xt,
    stride_xk,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BLOCK_G: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GEMV: tl.constexpr,  # BT == 1: CUDA-core multiply-adds; else a tensor-core [BT, V] tile
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_t = tl.program_id(1)
    offs_g = tl.arange(0, BLOCK_G)
    g_ok = offs_g < G
    gs = tl.load(gptr_ptr + offs_g, mask=g_ok, other=0)
    ge = tl.load(gptr_ptr + offs_g + 1, mask=g_ok, other=0)
    steps = tl.where(g_ok, tl.maximum((ge - gs + BK - 1) // BK, 1), 0)
    incl = tl.cumsum(steps, axis=0)
    S = tl.sum(steps, axis=0)
    P = tl.minimum(P, S)  # every program gets at least one step, so each group's owners are consecutive
    lo = (pid * S) // P
    hi = ((pid + 1) * S) // P
    if pid < P:
        # The group holding step lo, and that group's first step.
        g = tl.sum((incl <= lo).to(tl.int32), axis=0)
        first = tl.sum(tl.where(offs_g == g, incl - steps, 0), axis=0)
        gstart = tl.load(gptr_ptr + g)
        gend = tl.load(gptr_ptr + g + 1)
        offs_t = pid_t * BT + tl.arange(0, BT)
        t_ok = offs_t < T
        offs_k = tl.arange(0, BK)
        offs_v = tl.arange(0, V)
        offs_p = tl.arange(0, BT)[:, None] * V + offs_v[None, :]
        slots = part_ptr + (pid_t * (G + tl.num_programs(0))).to(tl.int64) * (BT * V)
        # One segment per group the share touches: a branch-free inner loop over the segment's
        # steps (so the compiler can software-pipeline it, as it does split-K's), then the flush.
        seg = lo
        while seg < hi:
            last = first + tl.maximum((gend - gstart + BK - 1) // BK, 1) - 1  # the group's last step
            seg_end = tl.minimum(last + 1, hi)
            if GEMV:
                acc2 = tl.zeros([BK, V], dtype=tl.float32)
            else:
                acc2 = tl.zeros([BT, V], dtype=tl.float32)
            for step in range(seg, seg_end):
                kk = gstart + (step - first) * BK + offs_k
                ok = kk < gend
                cols = tl.load(cols_ptr + kk, mask=ok, other=0).to(tl.int64)
                w = _value_tile(vals_ptr, kk, ok, offs_v, V)
                if GEMV:
                    xg = tl.load(x_ptr + pid_t.to(tl.int64) * stride_xt + cols * stride_xk, mask=ok, other=0.0)
                    acc2 += xg.to(tl.float32)[:, None] * w.to(tl.float32)
                else:
                    xg = tl.load(x_ptr + offs_t.to(tl.int64)[:, None] * stride_xt + cols[None, :] * stride_xk,
                                 mask=t_ok[:, None] & ok[None, :], other=0.0)  # [BT, BK]
                    if UPCAST:
                        xg = xg.to(tl.float32)
                        w = w.to(tl.float32)
                    acc2 += tl.dot(xg, w, input_precision=DOT_PRECISION)
            if GEMV:
                acc = tl.sum(acc2, axis=0)[None, :]  # [1, V]
            else:
                acc = acc2
            p0 = _owner(first, S, P)
            p1 = _owner(last, S, P)
            row_pos = g * V + offs_v
            row_ok = row_pos < M
            rows = tl.load(perm_ptr + row_pos, mask=row_ok, other=0).to(tl.int64)
            done = p0 == p1
            if p0 != p1:
                acc, done = last_arrival_sum(acc, slots + (g + p0).to(tl.int64) * (BT * V), pid - p0, p1 - p0 + 1,
                                             BT * V, lock_ptr + pid_t * G + g, offs_p, t_ok[:, None])
            if done:
                if HAS_BIAS:
                    acc += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[None, :]
                tl.store(out_ptr + offs_t.to(tl.int64)[:, None] * M + rows[None, :],
                         acc.to(out_ptr.dtype.element_ty), mask=t_ok[:, None] & row_ok[None, :])
            # the next group (when the share goes on past this one)
            g += 1
            first = last + 1
            gstart = gend
            gend = tl.load(gptr_ptr + g + 1, mask=g < G, other=0)
            seg = seg_end


def linear_decode_streamk(
    x2: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
    programs: int,
    config: DecodeConfig = DecodeConfig(),
) -> torch.Tensor:
    """x2 (T x K, any strides) -> T x M: for each tile of tokens (configs.token_tile; one token on
    CUDA cores), ``programs`` programs share the weight's steps equally (fewer if there are fewer
    steps)."""
    if programs < 1:
        raise ValueError(f"programs must be positive, got {programs}")
    n_groups = group_ptr.numel() - 1
    if n_groups > MAX_GROUPS:
        raise ValueError(f"the stream-K decode kernel takes at most {MAX_GROUPS} row groups, got {n_groups}")
    t = x2.shape[0]
    v = values.shape[1]
    gemv = config.gemv and t == 1
    bt = 1 if gemv else token_tile(t, config)
    tiles = triton.cdiv(t, bt)
    out = torch.empty(t, out_features, dtype=x2.dtype, device=x2.device)
    part = torch.empty(tiles * (n_groups + programs) * bt * v, dtype=torch.float32, device=x2.device)
    locks = arrival_counters(x2.device, tiles * n_groups)
    linear_decode_streamk_kernel[(programs, tiles)](
        x2, values, col_idx, group_ptr, perm, bias if bias is not None else values, out, part, locks,
        t, n_groups, out_features, programs, x2.stride(0), x2.stride(1),
        V=v, BT=bt, BK=config.block_k, BLOCK_G=triton.next_power_of_2(n_groups + 1), HAS_BIAS=bias is not None,
        GEMV=gemv, DOT_PRECISION=dot_precision(values.dtype), UPCAST=interpreter_upcast(values.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out
