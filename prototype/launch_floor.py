"""Experiment: what one Triton 3.6 launch costs on the host, piece by piece (JITFunction.run's steps).

    python prototype/launch_floor.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import host_us  # noqa: E402

from benchmarks.run_mlp import packed  # noqa: E402
from shflbw.kernels.configs import spmm_config  # noqa: E402
from shflbw.kernels.spmm import launch_spmm, needs_int64, spmm_fwd_kernel  # noqa: E402


def main():
    from triton import knobs
    from triton.runtime.driver import driver
    from triton.runtime.jit import compute_cache_key

    gen = torch.Generator().manual_seed(0)
    w, wm, p = packed(512, 512, 64, 0.25, gen)
    xt = torch.randn(512, 128, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(512, 128, device="cuda", dtype=torch.bfloat16)
    cfg = spmm_config(64, 128, torch.bfloat16)
    launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, xt, None, out, (128, 1), cfg)
    args = (p.values, p.col_idx, p.group_ptr, p.perm, xt, p.values, out, 512, 128, 128, 1, 128, 1, 1)
    consts = dict(V=64, BN=cfg.block_n, BK=cfg.block_k, HAS_BIAS=False, ACTIVATION=0, PERMUTE_OUT=True,
                  DOT_PRECISION="tf32", UPCAST=False, ATOMIC=False, EVEN_N=True, IDX64=False)
    opts = dict(num_warps=4, num_stages=5)
    grid = (8, 128 // cfg.block_n, 1)
    device = driver.active.get_current_device()
    kernel_cache, kernel_key_cache, target, backend, binder = spmm_fwd_kernel.device_caches[device]
    bound, spec, options = binder(*args, **consts, **opts, debug=False, instrumentation_mode=knobs.compilation.instrumentation_mode)
    key = compute_cache_key(kernel_key_cache, spec, options)
    kern = kernel_cache[key]
    stream = driver.active.get_current_stream(device)
    allargs = tuple(bound.values())

    def direct():
        kern.run(*grid, driver.active.get_current_stream(device), kern.function, kern.packed_metadata, None,
                 knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *allargs)

    rows = {
        "launch_spmm (ours, 1 launch)": lambda: launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, xt, None, out, (128, 1), cfg),
        "kernel[grid](...) raw": lambda: spmm_fwd_kernel[grid](*args, **consts, **opts),
        "needs_int64(3 tensors)": lambda: needs_int64(p.values, xt, out),
        "get_current_device": lambda: driver.active.get_current_device(),
        "get_current_stream": lambda: driver.active.get_current_stream(device),
        "binder": lambda: binder(*args, **consts, **opts, debug=False, instrumentation_mode=knobs.compilation.instrumentation_mode),
        "compute_cache_key": lambda: compute_cache_key(kernel_key_cache, spec, options),
        "launch_metadata": lambda: kern.launch_metadata(grid, stream, *allargs),
        "kern.run direct (floor)": direct,
        "torch.empty 512x128": lambda: torch.empty(512, 128, device="cuda", dtype=torch.bfloat16),
    }
    for name, fn in rows.items():
        print(f"{name:36s} {host_us(fn):7.2f} us/call", flush=True)
    direct()
    ref = out.clone()
    out.fill_(float("nan"))
    direct()
    torch.cuda.synchronize()
    print("direct launch output equals the JIT launch:", bool(torch.equal(out, ref)))


if __name__ == "__main__":
    main()
