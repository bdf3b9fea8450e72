"""Experiment: run one Shfl-BW kernel a few times after warm-up, for Nsight Compute to profile.

    python prototype/profile_kernels.py spmm     # feature-major SpMM, 4096^2, T = 4096, 75 %, V = 64
    python prototype/profile_kernels.py decode   # decode, 11008 x 4096 (--shape MxK), T = 1, 75 %, V = 64
    ncu --kernel-name regex:spmm --launch-skip 3 --launch-count 1 --set full \\
        python prototype/profile_kernels.py spmm
    ncu --clock-control none --nvtx --nvtx-include "prof/" --launch-skip 2 --launch-count 2 \\
        --section SpeedOfLight ... python prototype/profile_kernels.py decode --only dense --no-time

Prints the do_bench median beside the dense baseline (bf16), gated on correctness, so a profile
is always read next to the time it explains. ``--only sparse|dense`` runs one side only after the
check (which launches both once, first), so that every kernel ncu sees after it is that side's.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import median_us, rel_error  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.spmm import spmm_fwd  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402


def packed(m: int, k: int, vector: int, density: float):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    mask, perm = random_shflbw_mask(m, k, vector, density, generator=gen)
    w = ShflBWMatrix.from_dense(weight, mask, perm, vector=vector).to("cuda")
    return (weight * mask).cuda(), w


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "spmm"
    timed = "--no-time" not in sys.argv
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if which == "spmm":
        dense_w, w = packed(4096, 4096, 64, 0.25)
        b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)

        def run():
            return spmm_fwd(w.values, w.col_idx, w.group_ptr, w.perm, b, 4096)

        def dense():
            return dense_w @ b
    elif which == "decode":
        shape = sys.argv[sys.argv.index("--shape") + 1] if "--shape" in sys.argv else "11008x4096"
        m, k = map(int, shape.split("x"))
        dense_w, w = packed(m, k, 64, 0.25)
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)

        def run():
            return linear_fwd(x, w.values, w.col_idx, w.group_ptr, w.perm, None, m)

        def dense():
            return torch.nn.functional.linear(x, dense_w)
    else:
        raise SystemExit(f"unknown kernel {which!r}: spmm or decode")
    err = rel_error(run(), dense())
    if err > 2e-2:
        raise SystemExit(f"{which}: wrong result, relative error {err:.2e}")
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("prof")  # ncu --nvtx --nvtx-include "prof/": these launches only
    for _ in range(5):
        if only != "dense":
            run()
        if only != "sparse":
            dense()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
    if timed:
        graph = which == "decode"
        t, d = median_us(run, graph=graph), median_us(dense, graph=graph)
        print(f"{which}: {t:.1f} us, dense {d:.1f} us, {d / t:.2f}x (rel err {err:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
