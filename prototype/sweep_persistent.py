"""Experiment: the persistent feature-major SpMM (kernels/spmm_persistent.py) against the one-tile kernel.

    python prototype/sweep_persistent.py --out persistent.json [--parts short_k,long_k,conv1x1] [--variants configs|regs]

Why: with few [BK] steps per group the one-tile kernel spends much of each program filling and
draining its cp.async pipeline (75 %, V = 64, T = 32768: 4096 x 1024 at 1.75x of cuBLAS against
2.07x for 1024 x 4096, same flops and bytes; short-K sweep, BENCHMARKS.md). The persistent kernel
walks all of a program's tiles in one flat loop, so the pipeline stays full across tiles.
Shapes: BERT-large's 1024-wide layers at 256 x 128 tokens (8 steps a group at 75 %), the four
large layers at T = 4096 (32-86 steps), and ResNet-50's 1x1 convs at batch 64 as (C, H*W*N)
SpMMs (1-16 steps). CUDA-graph replays, dense `w @ b` (cuBLAS) in the same process, every
variant gated on correctness before it is timed.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.results_io import emit  # noqa: E402
from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig, spmm_fwd  # noqa: E402
from prototype.sweep_small_t import packed  # noqa: E402

# (M, K, N, V, sparsity)
PARTS = {
    "short_k": [(1024, 1024, 32768, 64, 0.75), (4096, 1024, 32768, 64, 0.75), (1024, 4096, 32768, 64, 0.75),
                (1024, 1024, 32768, 64, 0.875), (4096, 1024, 32768, 64, 0.875)],
    "long_k": [(4096, 4096, 4096, 64, 0.75), (11008, 4096, 4096, 64, 0.75), (4096, 11008, 4096, 64, 0.75),
               (14336, 4096, 4096, 64, 0.75), (4096, 4096, 4096, 64, 0.5), (4096, 4096, 4096, 64, 0.875),
               (4096, 4096, 4096, 128, 0.75)],
    # ResNet-50 1x1 stride-1 convs at batch 64: (Cout, Cin, H*W*64)
    "conv1x1": [(256, 64, 56 * 56 * 64, 64, 0.75), (64, 256, 56 * 56 * 64, 64, 0.75), (512, 128, 28 * 28 * 64, 64, 0.75),
                (128, 512, 28 * 28 * 64, 64, 0.75), (1024, 256, 14 * 14 * 64, 64, 0.75),
                (256, 1024, 14 * 14 * 64, 64, 0.75), (2048, 512, 7 * 7 * 64, 64, 0.75), (512, 2048, 7 * 7 * 64, 64, 0.75)],
}

# (BN, BK, warps, stages, programs per SM, register cap); programs per SM 0 is the one-tile kernel.
VARIANTS = {
    # first run (commit 6756969)
    "configs": [(128, 32, 4, 5, 0, None), (128, 64, 4, 3, 0, None),
                (128, 32, 4, 5, 1, None), (128, 32, 4, 5, 2, None), (128, 32, 4, 5, 3, None), (128, 32, 4, 5, 4, None),
                (128, 32, 4, 4, 2, None), (128, 32, 4, 6, 2, None), (128, 64, 4, 3, 2, None), (128, 64, 4, 4, 2, None),
                (256, 32, 8, 4, 1, None), (64, 32, 4, 5, 4, None)],
    # Register caps: ptxas (sm_90a, Triton 3.6) gives the persistent kernel 148 registers (3 programs
    # of 128 threads per SM; 45 KB shared would allow 5), the one-tile kernel 96 (5 per SM). A cap
    # of 128 spills 20 bytes and fits 4; 96 spills 276 bytes and fits 5. (The one-tile kernel at 80,
    # for 6 per SM, does not compile: ptxas asks for at least 90.)
    "regs": [(128, 32, 4, 5, 0, None), (128, 32, 4, 5, 3, None),
             (128, 32, 4, 5, 4, 128), (128, 32, 4, 5, 5, 104), (128, 32, 4, 5, 5, 96)],
}
REGS_CASES = ["M4096-K1024-N32768-V64-s0.75", "M4096-K1024-N32768-V64-s0.875", "M1024-K4096-N32768-V64-s0.75",
              "M4096-K4096-N4096-V64-s0.75", "M11008-K4096-N4096-V64-s0.75", "M256-K64-N200704-V64-s0.75",
              "M1024-K256-N12544-V64-s0.75", "M2048-K512-N3136-V64-s0.75"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="short_k,long_k,conv1x1")
    ap.add_argument("--variants", default="configs", choices=list(VARIANTS))
    ap.add_argument("--out", default="persistent.json")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    for part in args.parts.split(","):
        for m, k, n, v, s in PARTS[part]:
            case = f"M{m}-K{k}-N{n}-V{v}-s{s}"
            if args.variants == "regs" and case not in REGS_CASES:
                continue
            w, wm, p = packed(m, k, v, s)
            b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
            ref = wm.float() @ b.float()
            dense = gated("dense w@b", lambda: w @ b, w.float() @ b.float(), torch.bfloat16, graph=True)
            row = {"part": part, "case": case, "dense_us": dense["us"], "variants": {}}
            for bn, bk, nw, st, pps, regs in VARIANTS[args.variants]:
                cfg = SpmmConfig(bn, bk, nw, st, programs_per_sm=pps, maxnreg=regs)
                r = gated(str(cfg), lambda: spmm_fwd(p.values, p.col_idx, p.group_ptr, p.perm, b, m, config=cfg), ref,
                          torch.bfloat16, graph=True)
                key = f"{bn},{bk},{nw},{st},p{pps}" + (f",r{regs}" if regs else "")
                row["variants"][key] = r["us"] and round(dense["us"] / r["us"], 3)
            del w, wm, p, b, ref
            torch.cuda.empty_cache()
            emit(result, args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
