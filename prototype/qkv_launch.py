"""Experiment: a self-attention's Q, K and V projections as three SpMM launches or one stacked launch.

    python prototype/qkv_launch.py --out qkv_launch.json

Why: ``ShflBWSelfAttention`` ran three feature-major SpMMs of out_features rows each into one
[3 * out_features, T] buffer. At 75 %, V = 64, T = 32768 a 1024 x 1024 SpMM ran at 1.52x of cuBLAS
and a 4096 x 1024 one at 1.71x (sweep_persistent, session 6): more rows give more tiles to fill
the machine. ``ShflBWMatrix.stack_rows`` packs the three as one matrix. Times both, as CUDA-graph
replays with the library's own dispatch, beside cuBLAS on the stacked dense weight; gated.
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
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.configs import packed_spmm_config  # noqa: E402
from shflbw.kernels.spmm import launch_spmm  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402

# (out_features = in_features, tokens): BERT-large and MiniLM at 256 x 128 tokens, BERT-base at 64 x 512
CASES = [(1024, 32768), (384, 32768), (768, 32768)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="qkv_launch.json")
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--vector", type=int, default=64)
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    gen = torch.Generator().manual_seed(0)
    for m, t in CASES:
        mats, dense = [], []
        for _ in range(3):
            w = torch.randn(m, m, generator=gen).to(torch.bfloat16)
            mask, perm = random_shflbw_mask(m, m, args.vector, 1 - args.sparsity, generator=gen)
            mats.append(ShflBWMatrix.from_dense(w.cuda(), mask.cuda(), perm.cuda(), vector=args.vector))
            dense.append((w * mask).cuda())
        stacked = ShflBWMatrix.stack_rows(mats)
        wd = torch.cat(dense)
        x = torch.randn(m, t, device="cuda", dtype=torch.bfloat16)
        ref = wd.float() @ x.float()
        out = torch.empty(3 * m, t, device="cuda", dtype=torch.bfloat16)

        def three():
            for i, p in enumerate(mats):
                launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, x, None, out[i * m:(i + 1) * m], (t, 1),
                            packed_spmm_config(p.values, p.group_ptr, t))
            return out

        def one():
            launch_spmm(stacked.values, stacked.col_idx, stacked.group_ptr, stacked.perm, x, None, out, (t, 1),
                        packed_spmm_config(stacked.values, stacked.group_ptr, t))
            return out

        row = {"case": f"3x{m}-K{m}-T{t}-V{args.vector}-s{args.sparsity}", "variants": {}}
        timed = dict(graph=True, rep=100)
        row["variants"]["cublas stacked"] = gated("dense", lambda: wd @ x, ref, torch.bfloat16, **timed)["us"]
        out.fill_(float("nan"))
        row["variants"]["three launches"] = gated("three", three, ref, torch.bfloat16, **timed)["us"]
        out.fill_(float("nan"))
        row["variants"]["one stacked launch"] = gated("one", one, ref, torch.bfloat16, **timed)["us"]
        emit(result, args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
