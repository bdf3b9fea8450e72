"""Experiment: the resident-panel SpMM (kernels/spmm_resident.py) against the one-tile kernel and cuBLAS.

    python prototype/sweep_resident.py --out resident.json

Why: BERT-large's Q/K/V, output projection and fc1 (K = 1024, 75 %, V = 64, 32768 tokens) keep
about 256 vectors a group, and at V = 64 the one-tile kernel is bound by L2 traffic, a third of it
the value panels re-read for every token tile (BENCHMARKS.md, session 8). The resident kernel loads
each group's panel once per program. Cases: the three BERT-large shapes with their epilogues (bias;
bias + a feature-major residual; bias + GELU into group order), 87.5 %, and a Q/K/V-shaped weight
whose groups keep 192-320 vectors (as a global budget leaves them; the panel is then 256 + 64).
All CUDA-graph replays, gated against float32 math; a wrong result reports no time.
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
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.configs import packed_spmm_config  # noqa: E402
from shflbw.kernels.spmm import launch_spmm  # noqa: E402
from prototype.spmm_resident import launch_resident, resident_panel  # noqa: E402

T = 32768
# (name, M, K, kept per group (lo, hi), epilogue)
CASES = [("qkv", 3072, 1024, (256, 256), "bias"), ("out-proj", 1024, 1024, (256, 256), "bias+res"),
         ("fc1", 4096, 1024, (256, 256), "bias+gelu"), ("qkv-uneven", 3072, 1024, (192, 320), "bias"),
         ("fc1-87.5", 4096, 1024, (128, 128), "bias+gelu")]
# (BN, warps, stages, programs per SM)
CONFIGS = [(64, 4, 2, 1), (64, 4, 2, 2), (32, 4, 3, 2), (32, 4, 2, 2), (32, 4, 2, 3), (64, 8, 2, 1), (64, 8, 2, 2),
           (128, 8, 2, 1)]


def weight(m, k, lo, hi, gen):
    """A bf16 weight, a random permutation and a Shfl-BW mask whose groups keep lo..hi columns."""
    w = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    perm = torch.randperm(m, generator=gen)
    mask = torch.zeros(m, k, dtype=torch.bool)
    for g in range(m // 64):
        keep = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        mask[perm[g * 64:(g + 1) * 64, None], torch.randperm(k, generator=gen)[:keep][None, :]] = True
    return w.cuda(), mask.cuda(), perm.cuda()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="resident.json")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    gen = torch.Generator().manual_seed(0)
    timed = dict(graph=True, rep=100)
    for name, m, k, (lo, hi), epi in CASES:
        w, mask, perm = weight(m, k, lo, hi, gen)
        p = ShflBWMatrix.from_dense(w, mask, perm, vector=64)
        wm = (w * mask).float()
        x = torch.randn(k, T, device="cuda", dtype=torch.bfloat16)
        bias = torch.randn(m, device="cuda", dtype=torch.bfloat16)
        res = torch.randn(m, T, device="cuda", dtype=torch.bfloat16) if "res" in epi else None
        gelu = "gelu" in epi
        # fc1 writes group order (bias permuted accordingly), as the MLP region runs it
        permute_out = not gelu
        ref = wm @ x.float() + bias.float()[:, None]
        if res is not None:
            ref = ref + res.float()
        if gelu:
            ref = F.gelu(ref)[p.perm.long()]
            bias_k = bias[p.perm.long()]
        else:
            bias_k = bias
        out = torch.empty(m, T, device="cuda", dtype=torch.bfloat16)
        kw = dict(permute_out=permute_out, activation=2 if gelu else 0, residual=res)
        row = {"case": f"{name}-M{m}-K{k}-T{T}-kept{lo}-{hi}-{epi}", "panel": resident_panel(p.group_ptr),
               "variants": {}}
        row["variants"]["cublas w @ x"] = gated("dense", lambda: w @ x, w.float() @ x.float(), torch.bfloat16,
                                               **timed)["us"]
        cfg = packed_spmm_config(p.values, p.group_ptr, T)

        # each variant's first run (the gate) writes into a NaN-poisoned output; the timed runs do not refill it
        out.fill_(float("nan"))
        row["variants"]["one-tile (default)"] = gated("one-tile", lambda: launch_spmm(
            p.values, p.col_idx, p.group_ptr, p.perm, x, bias_k, out, (T, 1), cfg, **kw), ref, torch.bfloat16,
            **timed)["us"]
        panel = resident_panel(p.group_ptr)
        for bn, nw, st, pps in CONFIGS:
            def resident():
                return launch_resident(p.values, p.col_idx, p.group_ptr, p.perm, x, bias_k, out, (T, 1), panel,
                                       block_n=bn, num_warps=nw, num_stages=st, programs_per_sm=pps, **kw)

            out.fill_(float("nan"))
            row["variants"][f"resident BN{bn} w{nw} s{st} p{pps}"] = gated("resident", resident, ref, torch.bfloat16,
                                                                          **timed)["us"]
        emit(result, args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
