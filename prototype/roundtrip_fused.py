"""Experiment: the token-major roundtrip as ONE persistent kernel whose programs interleave transpose
tiles with SpMM tiles, so the HBM-bound transposes run beside the L2-bound SpMM on every SM.

    TRITON_INTERPRET=1 python prototype/roundtrip_fused.py   # checks it against the reference (CPU)

prototype/overlap_roundtrip.py tries the same overlap with three streams, which depends on the block
scheduler placing a transpose kernel's blocks beside a running SpMM; here the interleaving is fixed.

The tokens are cut into n chunks of c tokens (c a multiple of BN). Tasks come in phases p = 0..n+1:
phase p holds the input-transpose tiles of chunk p (X[c, K] -> X^T[:, chunk]), the SpMM tiles of
chunk p-1 (each [V, BN], written feature-major through the permutation) and the output-transpose
tiles of chunk p-2 (Y_fm[:, chunk] -> Y[chunk, M]), SpMM tiles spread evenly among the transposes.
Programs take tasks in order from one atomic counter. An SpMM tile waits (spinning on a counter)
until every input tile of its chunk is stored, an output tile until every SpMM tile of its chunk
is; both were handed out earlier, to programs that never wait on later tasks, so this cannot
deadlock. Under the CPU interpreter program 0 runs every task in order.

Result (session 16, H100, BENCHMARKS.md): the persistent form lost to the three-launch roundtrip
everywhere (255 registers); one program per task tied it (-0.08x to +0.13x). Not adopted.
"""

from __future__ import annotations

import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shflbw.kernels.spmm import _gather_dot, _store_tile, dot_precision, interpreter_upcast  # noqa: E402

TR = 64  # transpose tile side


@triton.jit
def _wait_for(counter_ptr, target):
    seen = tl.atomic_add(counter_ptr, 0, sem="acquire")
    while seen < target:
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire")


@triton.jit
def _done(counter_ptr):
    tl.debug_barrier()  # every thread's stores are issued before the release
    tl.atomic_add(counter_ptr, 1, sem="release")


@triton.jit
def _transpose_tile(src, dst, R, C, s_sr, s_sc, s_dc, s_dr, tr, tc, BR: tl.constexpr, BC: tl.constexpr):
    # dst[c, r] = src[r, c] for one [BR, BC] tile
    # int32 offsets (every operand < 2^31 elements: roundtrip_fused checks): int64 pointers for a
    # [64, 64] tile took the kernel to 255 registers (ptxas, sm_90a), 2 programs an SM
    offs_r = tr * BR + tl.arange(0, BR)
    offs_c = tc * BC + tl.arange(0, BC)
    ok = (offs_r < R)[:, None] & (offs_c < C)[None, :]
    tile = tl.load(src + offs_r[:, None] * s_sr + offs_c[None, :] * s_sc, mask=ok)
    tl.store(dst + offs_c[None, :] * s_dc + offs_r[:, None] * s_dr, tile, mask=ok)


@triton.jit
def roundtrip_fused_kernel(
    x_ptr,  # [T, K] contiguous
    xt_ptr,  # [K, T] workspace
    vals_ptr, cols_ptr, gptr_ptr, perm_ptr, bias_ptr,
    yfm_ptr,  # [M, T] workspace (feature-major output)
    out_ptr,  # [T, M] contiguous
    ctr_ptr,  # int32 [1 + 2 * n_chunks], zeroed: task counter, input tiles done per chunk, SpMM tiles done per chunk
    phase_ptr,  # int32 [n_chunks + 3]: first task of each phase, then the total
    T, K, M, n_groups, n_chunks, chunk,
    V: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, PERSISTENT: tl.constexpr,
):
    n_in = tl.cdiv(chunk, BT) * tl.cdiv(K, BT)  # input-transpose tiles per chunk
    n_mm = n_groups * (chunk // BN)  # SpMM tiles per chunk
    if PERSISTENT:
        total = tl.load(phase_ptr + n_chunks + 2)
        task = tl.atomic_add(ctr_ptr, 1)
        while task < total:
            _run_task(task, x_ptr, xt_ptr, vals_ptr, cols_ptr, gptr_ptr, perm_ptr, bias_ptr, yfm_ptr, out_ptr, ctr_ptr,
                      phase_ptr, T, K, M, n_groups, n_chunks, chunk, n_in, n_mm,
                      V, BN, BK, BT, HAS_BIAS, DOT_PRECISION, UPCAST)
            task = tl.atomic_add(ctr_ptr, 1)
    else:
        # one task per program, in program-id order: waits only on lower ids, which the hardware
        # dispatches first in practice (not a CUDA guarantee: the persistent form is the safe one)
        _run_task(tl.program_id(0), x_ptr, xt_ptr, vals_ptr, cols_ptr, gptr_ptr, perm_ptr, bias_ptr, yfm_ptr, out_ptr,
                  ctr_ptr, phase_ptr, T, K, M, n_groups, n_chunks, chunk, n_in, n_mm,
                  V, BN, BK, BT, HAS_BIAS, DOT_PRECISION, UPCAST)


@triton.jit
def _run_task(task, x_ptr, xt_ptr, vals_ptr, cols_ptr, gptr_ptr, perm_ptr, bias_ptr, yfm_ptr, out_ptr, ctr_ptr,
              phase_ptr, T, K, M, n_groups, n_chunks, chunk, n_in, n_mm,
              V: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
              HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    offs_v = tl.arange(0, V)
    offs_k = tl.arange(0, BK)
    p = task * 0
    while task >= tl.load(phase_ptr + p + 1):
        p += 1
    j = task - tl.load(phase_ptr + p)
    size = tl.load(phase_ptr + p + 1) - tl.load(phase_ptr + p)
    mm_here = tl.where((p >= 1) & (p <= n_chunks), n_mm, 0)
    in_here = tl.where(p < n_chunks, n_in, 0)
    before = (j * mm_here) // size  # SpMM tasks among the phase's first j
    if ((j + 1) * mm_here) // size > before:
        # SpMM tile `before` of chunk p - 1: group fastest, then token tile
        ci = p - 1
        _wait_for(ctr_ptr + 1 + ci, n_in)
        g = before % n_groups
        offs_n = ci * chunk + (before // n_groups) * BN + tl.arange(0, BN)
        n_ok = offs_n < T
        start = tl.load(gptr_ptr + g)
        end = tl.load(gptr_ptr + g + 1)
        acc = tl.zeros([V, BN], dtype=tl.float32)
        n_full = (end - start) // BK
        for i in range(0, n_full):
            acc = _gather_dot(acc, vals_ptr, cols_ptr, xt_ptr, start + i * BK + offs_k, end, offs_v, offs_n, n_ok,
                              T, 1, V, False, False, False, DOT_PRECISION, UPCAST)
        if start + n_full * BK < end:
            acc = _gather_dot(acc, vals_ptr, cols_ptr, xt_ptr, start + n_full * BK + offs_k, end, offs_v, offs_n,
                              n_ok, T, 1, V, True, False, False, DOT_PRECISION, UPCAST)
        _store_tile(acc, g, offs_v, offs_n, n_ok, M, T, perm_ptr, bias_ptr, yfm_ptr, yfm_ptr, T, 1,
                    yfm_ptr, yfm_ptr, 1, 0.0, V, HAS_BIAS, False, 0, True)
        _done(ctr_ptr + 1 + n_chunks + ci)
    else:
        u = j - before  # transpose tasks among the phase's first j
        if u < in_here:
            # input tile u of chunk p: X[chunk rows, K] -> X^T[K, chunk columns]
            nc = tl.cdiv(K, BT)
            base = p * chunk
            _transpose_tile(x_ptr + base * K, xt_ptr + base, chunk, K, K, 1, T, 1, u // nc, u % nc, BT, BT)
            _done(ctr_ptr + 1 + p)
        else:
            # output tile of chunk p - 2: Y_fm[M, chunk columns] -> Y[chunk rows, M]
            ci = p - 2
            _wait_for(ctr_ptr + 1 + n_chunks + ci, n_mm)
            w = u - in_here
            nc = tl.cdiv(chunk, BT)
            base = ci * chunk
            _transpose_tile(yfm_ptr + base, out_ptr + base * M, M, chunk, T, 1, M, 1, w // nc, w % nc, BT, BT)


def phase_starts(n_chunks: int, n_in: int, n_mm: int, n_out: int) -> list[int]:
    starts = [0]
    for p in range(n_chunks + 2):
        size = (n_in if p < n_chunks else 0) + (n_mm if 1 <= p <= n_chunks else 0) + (n_out if p >= 2 else 0)
        starts.append(starts[-1] + size)
    return starts


_STARTS: dict[tuple, torch.Tensor] = {}


def _starts_on(device, table: list[int]) -> torch.Tensor:
    """The phase table on the device, copied once per table: a host-to-device copy cannot be
    recorded into a CUDA graph (the first, eager call copies it; a replay reuses it)."""
    key = (device, *table)
    if key not in _STARTS:
        _STARTS[key] = torch.tensor(table, dtype=torch.int32, device=device)
    return _STARTS[key]


def roundtrip_fused(x2, p, bias, chunks: int = 4, programs: int | None = None, block_n: int = 128, block_k: int = 32,
                    num_warps: int = 4, num_stages: int = 5, poison: bool = False,
                    maxnreg: int | None = None, persistent: bool = True) -> torch.Tensor:
    """y = x2 @ W^T + bias, token-major in and out, one launch (plus one memset of the counters).
    ``poison``: fill the workspaces and the output with NaN first (the check: every element written).
    ``maxnreg``: register cap. Offline ptxas (triton 3.6, sm_90a, 4 warps, 5 stages) gives this kernel
    255 registers, 2 programs an SM, where the one-tile SpMM takes 168 (3 an SM); even without the
    transposes it takes 251, so the persistent task loop is what costs them. Capped at 168: 360 B
    of spills a thread. ``persistent=False``: one program per task (no task loop, fewer registers),
    relying on the hardware dispatching programs in id order."""
    t, k = x2.shape
    m = p.shape[0]
    v = p.values.shape[1]
    g = p.group_ptr.numel() - 1
    if t % chunks or (t // chunks) % block_n:
        raise ValueError(f"T = {t} must split into {chunks} chunks of a multiple of {block_n} tokens")
    c = t // chunks
    if max(t * k, t * m, p.values.numel()) >= 2**31:
        raise ValueError("the fused roundtrip computes int32 offsets: operands must have < 2^31 elements")
    n_in = triton.cdiv(c, TR) * triton.cdiv(k, TR)
    n_mm = g * (c // block_n)
    n_out = triton.cdiv(m, TR) * triton.cdiv(c, TR)
    table = phase_starts(chunks, n_in, n_mm, n_out)
    starts = _starts_on(x2.device, table)
    ctr = torch.zeros(1 + 2 * chunks, dtype=torch.int32, device=x2.device)
    new = torch.full if poison else (lambda shape, _, **kw: torch.empty(shape, **kw))
    xt = new((k, t), float("nan"), dtype=x2.dtype, device=x2.device)
    yfm = new((m, t), float("nan"), dtype=x2.dtype, device=x2.device)
    out = new((t, m), float("nan"), dtype=x2.dtype, device=x2.device)
    if not persistent:
        programs = table[-1]  # one per task
    elif programs is None:
        programs = 2 if not x2.is_cuda else 4 * torch.cuda.get_device_properties(x2.device).multi_processor_count
    roundtrip_fused_kernel[(programs,)](
        x2, xt, p.values, p.col_idx, p.group_ptr, p.perm, bias if bias is not None else p.values, yfm, out, ctr,
        starts, t, k, m, g, chunks, c,
        V=v, BN=block_n, BK=block_k, BT=TR, HAS_BIAS=bias is not None, PERSISTENT=persistent,
        DOT_PRECISION=dot_precision(p.values.dtype), UPCAST=interpreter_upcast(p.values.dtype),
        num_warps=num_warps, num_stages=num_stages, **({} if maxnreg is None else {"maxnreg": maxnreg}),
    )
    return out


def _check() -> int:
    from shflbw import ShflBWMatrix
    from shflbw.testing import random_shflbw_mask

    worst = 0.0
    for (m, k, t, v, chunks, dtype) in [(96, 80, 256, 32, 2, torch.float32), (128, 64, 512, 64, 4, torch.float16),
                                        (64, 128, 128, 16, 1, torch.bfloat16)]:
        gen = torch.Generator().manual_seed(m + k)
        w = torch.randn(m, k, generator=gen)
        mask, perm = random_shflbw_mask(m, k, v, 0.3, generator=gen)
        p = ShflBWMatrix.from_dense(w.to(dtype), mask, perm, vector=v)
        bias = torch.randn(m, generator=gen).to(dtype)
        x = torch.randn(t, k, generator=gen).to(dtype)
        ref = x.double() @ (w.to(dtype).double() * mask).t() + bias.double()
        for persistent in (True, False):
            y = roundtrip_fused(x, p, bias, chunks=chunks, block_n=64, poison=True, persistent=persistent)
            err = ((y.double() - ref).norm() / ref.norm()).item()
            print(f"M{m} K{k} T{t} V{v} chunks {chunks} {dtype} persistent {persistent}: rel error {err:.2e}")
            worst = max(worst, err if torch.isfinite(y).all() else float("inf"))
    return 0 if worst < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(_check())
