"""Experiment: where the host time of one eager call goes (shflbw.linear at T = 128, the MLP block).

    python prototype/host_profile.py

Per-call host cost (many calls, one sync) for: F.linear, one raw Triton launch of the spmm kernel,
the same compiled kernel launched directly (CompiledKernel[grid], the floor), the kernel-level
linear_fwd, the registered op, the MLP op; then cProfile's top entries for the op and the MLP.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import host_us  # noqa: E402

import shflbw  # noqa: E402
from benchmarks.run_mlp import packed  # noqa: E402
from shflbw import PackedMLP  # noqa: E402
from shflbw.kernels.configs import spmm_config  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.spmm import launch_spmm  # noqa: E402


def top(fn, n=200, lines=28):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(lines)
    return s.getvalue()


def main():
    gen = torch.Generator().manual_seed(0)
    w, wm, p = packed(512, 512, 64, 0.25, gen)
    x = torch.randn(128, 512, device="cuda", dtype=torch.bfloat16)
    xt = x.t().contiguous()
    out = torch.empty(512, 128, device="cuda", dtype=torch.bfloat16)
    cfg = spmm_config(64, 128, torch.bfloat16)
    args = (p.values, p.col_idx, p.group_ptr, p.perm, None, 512)
    w1, _, p1 = packed(1024, 512, 64, 0.25, gen)
    w2, _, p2 = packed(512, 1024, 64, 0.25, gen)
    block = PackedMLP(p1, p2, None, None, "gelu")
    rows = {
        "F.linear": lambda: F.linear(x, w),
        "launch_spmm (1 Triton launch)": lambda: launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, xt, None, out, (128, 1), cfg),
        "linear_fwd roundtrip (3 launches)": lambda: linear_fwd(x, *args, path="roundtrip"),
        "shflbw.linear op": lambda: shflbw.linear(x, p),
        "shflbw.mlp op": lambda: shflbw.mlp(x, block),
    }
    for name, fn in rows.items():
        print(f"{name:40s} {host_us(fn):7.1f} us/call", flush=True)
    # the floor: the compiled kernel launched without the JIT's argument binding
    from shflbw.kernels.spmm import spmm_fwd_kernel

    try:
        import triton

        kern = spmm_fwd_kernel.warmup(
            p.values, p.col_idx, p.group_ptr, p.perm, xt, p.values, out, 512, 128, 128, 1, 128, 1, 1,
            V=64, BN=cfg.block_n, BK=cfg.block_k, HAS_BIAS=False, ACTIVATION=0, PERMUTE_OUT=True, DOT_PRECISION="tf32",
            UPCAST=False, ATOMIC=False, EVEN_N=True, IDX64=False, grid=(8, 2, 1), num_warps=4, num_stages=5)
        grid = (8, triton.cdiv(128, cfg.block_n), 1)
        full = (p.values, p.col_idx, p.group_ptr, p.perm, xt, p.values, out, 512, 128, 128, 1, 128, 1, 1)
        print(f"{'CompiledKernel[grid] direct':40s} {host_us(lambda: kern[grid](*full)):7.1f} us/call", flush=True)
    except Exception as e:  # internal API: report, do not fail the probe
        print("CompiledKernel direct launch failed:", type(e).__name__, str(e)[:300], flush=True)
    print("=== cProfile: shflbw.linear op, 200 calls ===")
    print(top(lambda: shflbw.linear(x, p)))
    print("=== cProfile: shflbw.mlp op, 200 calls ===")
    print(top(lambda: shflbw.mlp(x, block)))


if __name__ == "__main__":
    main()
