"""Experiment: what the SpMM epilogue's activation costs (fc1 of an MLP block, feature-major, group order).

    python prototype/sweep_epilogue.py --out epilogue.json

Why: in BERT-large's forward (256 x 128 tokens, 75 %, V = 64; prototype/profile_e2e.py --sequence,
session 7) fc1 (4096 x 1024, + bias, GELU) took 358 us where the same SpMM without an activation
ran about 245 us in the sweeps. GELU's erf (libdevice erff) runs on every output element of a tile
in the epilogue. Times each fc1-like SpMM with no activation, ReLU, GELU through tl.erf and GELU's
tanh form through the hardware tanh (the default for 16-bit outputs since session 7,
kernels/spmm.kernel_activation), as CUDA-graph replays beside cuBLAS
``w @ x``; every variant is gated against float32 math with its own activation.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.results_io import emit  # noqa: E402
from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated  # noqa: E402
from prototype.sweep_small_t import packed  # noqa: E402
from shflbw.kernels.configs import packed_spmm_config  # noqa: E402
from shflbw.kernels.spmm import launch_spmm  # noqa: E402

# (M, K, T): BERT-large's and MiniLM's fc1 at 256 x 128 tokens, a 4096-wide model's at 4096 tokens
CASES = [(4096, 1024, 32768), (1536, 384, 32768), (11008, 4096, 4096)]
# name: (activation, exact_gelu, reference). Session 7 (commit f56ded9) also timed an erf by
# Abramowitz and Stegun 7.1.26 (one approximate division, one exp2): slower than libdevice's erff
# (425 / 155 / 323 us against 361 / 127 / 291 us), so it was dropped.
ACTS = {"none": (0, False, lambda y: y), "relu": (1, False, F.relu), "gelu erf": (2, True, F.gelu),
        "gelu tanh.approx (default)": (2, False, F.gelu)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="epilogue.json")
    ap.add_argument("--sparsity", type=float, default=0.75)
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    for m, k, t in CASES:
        _, wd, p = packed(m, k, 64, args.sparsity)
        bias = torch.randn(m, device="cuda", dtype=torch.bfloat16)
        x = torch.randn(k, t, device="cuda", dtype=torch.bfloat16)
        lin = wd.float() @ x.float() + bias.float()[:, None]
        cfg = packed_spmm_config(p.values, p.group_ptr, t)
        out = torch.empty(m, t, device="cuda", dtype=torch.bfloat16)
        row = {"case": f"M{m}-K{k}-T{t}-V64-s{args.sparsity}", "config": str(cfg), "variants": {}}
        timed = dict(graph=True, rep=100)
        row["variants"]["cublas w @ x"] = gated("dense", lambda: wd @ x, lin - bias.float()[:, None], torch.bfloat16,
                                               **timed)["us"]
        for name, (code, exact, fn) in ACTS.items():
            out.fill_(float("nan"))
            r = gated(name, lambda: launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, x, bias, out, (t, 1), cfg,
                                                activation=code, exact_gelu=exact), fn(lin), torch.bfloat16, **timed)
            row["variants"][name] = r["us"]
            row["variants"][name + " error"] = r["error"]
        emit(result, args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
