"""Weight-bound Shfl-BW linear for few tokens (decode): read every packed value once.

One program owns VS of one row group's V rows (a row slice, VS = V by default) and one share of
its kept vectors (split-K): it streams [BK, VS] value tiles, gathers the matching features of the
(tiny, cache-resident) token-major X, and accumulates a [BT, VS] tile. With split-K the partial
sums meet in the same launch (reduce="fixup") or by float32 atomic adds finished by later launches.

Measured on an H200 (BENCHMARKS.md): 4096 x 4096 at 75 %, T = 1, takes 14 us against ~2.4 us of
weight reads at bandwidth, so launch and latency dominate. Replacing split-K by row slices of 16
(one launch, no atomics) was slower, not faster (0.71x vs 1.38x of dense). Finishing the split-K sums
in the same launch (the last split of a tile adds the partials) instead of atomics plus three more
launches took 11008 x 4096, T = 1, 75 % from 1.36x to 1.92x of dense: see configs.decode_plan.

Where it stands (H100, session 13, prototype/decode_probe.py): on the layers of 40M+ weights at 75 %
it reads its packed bytes as fast as cuBLAS reads a dense weight of the same bytes (2.48-2.54x of
dense against 2.40-2.44x); the indices, gather, products and fix-up cost 0.5-2 us over streaming
the values alone on the same grid, and flat streaming of the values (4 programs per SM, no
product) is 9-13 % faster, the headroom of a better decomposition (this grid fills 0.65 waves).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from shflbw.kernels.spmm import dot_precision, interpreter_upcast


@dataclass(frozen=True)
class DecodeConfig:
    # BK 128 beat 64 in the decode sweep (4096^2, T = 1, 75 %: 1.38x vs 1.20x of dense, 4 splits).
    block_k: int = 128
    num_warps: int = 4
    # T = 1 on CUDA cores (no tensor-core tile padded to 16 tokens): 4-15 % faster than the tile
    # at T = 1 on the four layers >= 4096 (H200 sweep, commit 5abf4f1). False: always the tile.
    gemv: bool = True
    # T > 1: transpose X first (one more launch) so the gather reads whole token runs.
    transpose_x: bool = False
    num_stages: int = 3
    # T = 1 (gemv): pipeline depth of the CUDA-core loop (cp.async prefetch of the value tile and
    # column indices); 1 keeps plain loads, the compiler's default for a loop without a dot.
    gemv_stages: int = 1
    # T = 1 (gemv): 0, each step loads its indices, then gathers, then its value tile waits behind
    # them; 1, the next step's value tile and indices are issued before this step's multiply-adds (a
    # register double buffer); 2, as 1 with the indices one step further ahead. Measured on an H100
    # (BENCHMARKS.md, session 12): 0-6 % faster with fewer splits than the plan's, 10-14 % slower with
    # the plan's on 14336 x 4096 (167 registers against 121: 3 programs per SM, not 4), so 0 stays.
    gemv_prefetch: int = 0
    # T > 1: tokens per program (a power of two, 16-128); None: T rounded up to a power of two,
    # at most 64.
    block_t: int | None = None
    # > 0 runs the stream-K kernel (decode_streamk.py) with this many programs per SM (per tile of
    # tokens), each taking an equal share of the weight's [block_k] steps across row groups; 0 keeps
    # split-K, which was 8-25 % faster on an H100 (session 13) and still 2-14 % faster after the
    # stream-K loop was made pipelinable (session 14; BENCHMARKS.md).
    stream_k: int = 0

    def __post_init__(self):
        bt = self.block_t
        if bt is not None and (bt < 16 or bt > 128 or bt & (bt - 1)):
            raise ValueError(f"block_t must be a power of two in [16, 128], got {bt}")
        if self.gemv_prefetch not in (0, 1, 2):
            raise ValueError(f"gemv_prefetch must be 0, 1 or 2, got {self.gemv_prefetch!r}")
        if not isinstance(self.stream_k, int) or self.stream_k < 0:
            raise ValueError(f"stream_k must be a non-negative int (programs per SM), got {self.stream_k!r}")


def token_tile(tokens: int, config: DecodeConfig) -> int:
    """The decode kernel's tokens per program for T > 1 (config.block_t, else T rounded up to a power
    of two, 16-64)."""
    return config.block_t or min(64, max(16, 1 << (tokens - 1).bit_length()))


@triton.jit
def _value_tile(vals_ptr, kk, ok, offs_v, V: tl.constexpr):
    """The [BK, VS] slice of kept vectors ``kk`` (rows of the [nnz, V] value panel); rows not ``ok``
    load zeros."""
    return tl.load(vals_ptr + kk.to(tl.int64)[:, None] * V + offs_v[None, :], mask=ok[:, None], other=0.0)


@triton.jit
def last_arrival_sum(acc, first_ptr, mine, count, step, lock_ptr, offs_p, p_mask):
    """Split-K finished in the same launch (stream-K style): contributor ``mine`` of ``count`` stores its
    partial tile at ``first_ptr + mine * step`` and counts itself on ``lock_ptr``; the last to arrive
    sums every partial in contributor order (deterministic), re-zeroes the counter for the next launch
    and gets (sum, True); the others get (acc, False)."""
    tl.store(first_ptr + tl.cast(mine, tl.int64) * step + offs_p, acc, mask=p_mask)
    tl.debug_barrier()  # every thread's partial is written before the release below
    arrived = tl.atomic_add(lock_ptr, 1, sem="acq_rel")
    last = arrived == count - 1
    if last:
        acc = tl.zeros_like(acc)
        for c in range(0, count):
            acc += tl.load(first_ptr + tl.cast(c, tl.int64) * step + offs_p, mask=p_mask, other=0.0, cache_modifier=".cg")
        tl.store(lock_ptr, 0)
    return acc, last


@triton.jit
def linear_decode_fwd_kernel(
    x_ptr,  # [T, K] at (stride_xt, stride_xk)
    vals_ptr,  # [nnz, V]
    cols_ptr,  # [nnz] int32
    gptr_ptr,  # [G + 1] int32
    perm_ptr,  # [M] int32
    bias_ptr,  # [M] or dummy
    out_ptr,  # [T, M] contiguous: out dtype, or float32 when REDUCE == 1
    part_ptr,  # REDUCE == 2: float32 [SPLITS, tiles, BT, VS] partial sums; else dummy
    lock_ptr,  # REDUCE == 2: int32 [tiles] arrival counters, zero between launches; else dummy
    T,
    M,
    stride_xt,
    stride_xk,
    SPLITS,
    V: tl.constexpr,
    VS: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    REDUCE: tl.constexpr,  # 0: one split, store; 1: atomic adds into float32 out; 2: last split sums
    GEMV: tl.constexpr,  # BT == 1: CUDA-core multiply-adds instead of a tensor-core tile
    GEMV_STAGES: tl.constexpr,
    GEMV_PREFETCH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    g = tl.program_id(0)
    s = tl.program_id(1) // (V // VS)  # K split
    q = tl.program_id(1) % (V // VS)  # row slice
    pid_t = tl.program_id(2)
    start = tl.load(gptr_ptr + g)
    end = tl.load(gptr_ptr + g + 1)
    offs_t = pid_t * BT + tl.arange(0, BT)
    t_ok = offs_t < T
    offs_v = q * VS + tl.arange(0, VS)
    offs_k = tl.arange(0, BK)
    # Split s takes every SPLITS-th [BK] tile of the group: no host-side knowledge of group sizes
    # is needed, so the launch stays sync-free and capturable in a CUDA graph.
    if GEMV and GEMV_PREFETCH > 0:
        # The same multiply-adds with the next step's loads issued first, so the value tile (the
        # stream that matters) is in flight during this step's math. The next step's gather needs
        # its column indices: loaded in this step (1), the gather stalls for one memory latency
        # (ptxas hoists it above the math; offline SASS, sm_90a); loaded one step earlier (2), it
        # does not. Steps past the end load nothing (masked).
        step = SPLITS * BK
        x_row = x_ptr + pid_t.to(tl.int64) * stride_xt
        acc2 = tl.zeros([BK, VS], dtype=tl.float32)
        kk = start + s * BK + offs_k
        k_ok = kk < end
        w = _value_tile(vals_ptr, kk, k_ok, offs_v, V)
        cols = tl.load(cols_ptr + kk, mask=k_ok, other=0).to(tl.int64)
        xg = tl.load(x_row + cols * stride_xk, mask=k_ok, other=0.0)
        cols_ahead = cols  # GEMV_PREFETCH == 2: the indices of the step after the next
        if GEMV_PREFETCH == 2:
            cols_ahead = tl.load(cols_ptr + kk + step, mask=kk + step < end, other=0).to(tl.int64)
        for k0 in range(start + s * BK, end, step):
            kn = k0 + step + offs_k
            n_ok = kn < end
            w_next = _value_tile(vals_ptr, kn, n_ok, offs_v, V)
            if GEMV_PREFETCH == 2:
                cols_next = cols_ahead
                cols_ahead = tl.load(cols_ptr + kn + step, mask=kn + step < end, other=0).to(tl.int64)
            else:
                cols_next = tl.load(cols_ptr + kn, mask=n_ok, other=0).to(tl.int64)
            acc2 += xg.to(tl.float32)[:, None] * w.to(tl.float32)
            xg = tl.load(x_row + cols_next * stride_xk, mask=n_ok, other=0.0)
            w = w_next
        acc = tl.sum(acc2, axis=0)[None, :]  # [1, VS]
    elif GEMV:
        # One token: multiply-adds on CUDA cores into a [BK, VS] register tile, reduced once at the
        # end; no tensor-core tile padded from 1 to 16 tokens, no trip through shared memory.
        acc2 = tl.zeros([BK, VS], dtype=tl.float32)
        for k0 in tl.range(start + s * BK, end, SPLITS * BK, num_stages=GEMV_STAGES):
            kk = k0 + offs_k
            k_ok = kk < end
            cols = tl.load(cols_ptr + kk, mask=k_ok, other=0).to(tl.int64)
            xg = tl.load(x_ptr + pid_t.to(tl.int64) * stride_xt + cols * stride_xk, mask=k_ok, other=0.0)  # [BK]
            w = _value_tile(vals_ptr, kk, k_ok, offs_v, V)
            acc2 += xg.to(tl.float32)[:, None] * w.to(tl.float32)
        acc = tl.sum(acc2, axis=0)[None, :]  # [1, VS]
    else:
        acc = tl.zeros([BT, VS], dtype=tl.float32)
        for k0 in range(start + s * BK, end, SPLITS * BK):
            kk = k0 + offs_k
            k_ok = kk < end
            cols = tl.load(cols_ptr + kk, mask=k_ok, other=0).to(tl.int64)
            xg = tl.load(
                x_ptr + offs_t.to(tl.int64)[:, None] * stride_xt + cols[None, :] * stride_xk,
                mask=t_ok[:, None] & k_ok[None, :],
                other=0.0,
            )  # [BT, BK]
            w = _value_tile(vals_ptr, kk, k_ok, offs_v, V)  # [BK, VS]
            if UPCAST:
                xg = xg.to(tl.float32)
                w = w.to(tl.float32)
            acc += tl.dot(xg, w, input_precision=DOT_PRECISION)
    row_pos = g * V + offs_v
    row_ok = row_pos < M
    rows = tl.load(perm_ptr + row_pos, mask=row_ok, other=0).to(tl.int64)
    out_ptrs = out_ptr + offs_t.to(tl.int64)[:, None] * M + rows[None, :]
    ok = t_ok[:, None] & row_ok[None, :]
    if REDUCE == 1:
        tl.atomic_add(out_ptrs, acc, mask=ok, sem="relaxed")
    else:
        done = True
        if REDUCE == 2:
            # Every split stores its partial tile; the last to arrive sums them and writes the output.
            n_tiles = tl.num_programs(0) * (V // VS) * tl.num_programs(2)
            tile = (pid_t * tl.num_programs(0) + g) * (V // VS) + q
            offs_p = tl.arange(0, BT)[:, None] * VS + tl.arange(0, VS)[None, :]
            acc, done = last_arrival_sum(acc, part_ptr + tile.to(tl.int64) * (BT * VS), s, SPLITS, n_tiles * (BT * VS),
                                         lock_ptr + tile, offs_p, t_ok[:, None])
        if done:
            if HAS_BIAS:
                acc += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=ok)


_locks: dict = {}


def arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """A zeroed int32 buffer of at least ``n`` counters for this device and stream, kept between calls.

    The kernel leaves every counter it used at zero, so the buffer is zeroed once, at allocation
    (a power-of-two size, so it is rarely re-made; CUDA-graph capture records that one memset).
    One buffer per stream: two launches sharing counters concurrently would race.
    """
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    buf = _locks.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(1024, triton.next_power_of_2(n)), dtype=torch.int32, device=device)
        _locks[key] = buf
    return buf


def linear_decode(
    x2: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
    splits: int,
    config: DecodeConfig = DecodeConfig(),
    row_slice: int | None = None,
    reduce: str = "fixup",
) -> torch.Tensor:
    """x2 (T x K, any strides) -> T x M; ``splits`` programs share each group, tokens in tiles
    (configs.token_tile).

    With ``splits > 1`` the partial sums meet either in the same launch (``reduce='fixup'``: the
    last split of each tile sums them) or by float32 atomic adds finished by later launches
    (``reduce='atomic'``).
    """
    if reduce not in ("fixup", "atomic"):
        raise ValueError(f"reduce must be 'fixup' or 'atomic', got {reduce!r}")
    t = x2.shape[0]
    v = values.shape[1]
    n_groups = group_ptr.numel() - 1
    gemv = config.gemv and t == 1
    bt = 1 if gemv else token_tile(t, config)
    vs = row_slice or v
    if v % vs or vs < 16 or vs & (vs - 1):
        raise ValueError(f"row_slice must be a power of two >= 16 dividing V={v}, got {vs}")
    mode = 0 if splits == 1 else 2 if reduce == "fixup" else 1
    grid = (n_groups, splits * (v // vs), triton.cdiv(t, bt))
    n_tiles = grid[0] * (v // vs) * grid[2]
    if mode == 1:
        out = torch.zeros(t, out_features, dtype=torch.float32, device=x2.device)
    else:
        out = torch.empty(t, out_features, dtype=x2.dtype, device=x2.device)
    if mode == 2:
        part = torch.empty(splits * n_tiles * bt * vs, dtype=torch.float32, device=x2.device)
        locks = arrival_counters(x2.device, n_tiles)
    else:
        part = locks = values
    linear_decode_fwd_kernel[grid](
        x2,
        values,
        col_idx,
        group_ptr,
        perm,
        bias if bias is not None else values,
        out,
        part,
        locks,
        t,
        out_features,
        x2.stride(0),
        x2.stride(1),
        splits,
        V=v,
        VS=vs,
        BT=bt,
        BK=config.block_k,
        HAS_BIAS=bias is not None,
        REDUCE=mode,
        GEMV=gemv,
        GEMV_STAGES=config.gemv_stages,
        GEMV_PREFETCH=int(config.gemv_prefetch),
        DOT_PRECISION=dot_precision(values.dtype),
        UPCAST=interpreter_upcast(values.dtype),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    if mode == 1:
        if bias is not None:
            out += bias.float()
        out = out.to(x2.dtype)
    return out
