"""Benchmark the sparse MLP block (shflbw.mlp) against the dense block, eager and torch.compile.

    python benchmarks/run_mlp.py --out mlp.json

Dense: F.linear -> F.gelu -> F.linear (cuBLAS), eager and compiled (static shapes, once per shape);
the faster counts as 1.00x.
Gated: the sparse output must match the fp32 block on the masked weights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.baselines import compile_static  # noqa: E402
from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import format_row, gated  # noqa: E402
from shflbw import PackedMLP, ShflBWMatrix, linear, mlp  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402

CASES = {"large": [(4096, 16384), (4096, 11008)],  # (model dim, hidden)
         "encoders": [(1024, 4096), (384, 1536)]}  # BERT-large's and MiniLM's blocks (run_e2e.py)


def dense_block(x, w1, b1, w2, b2):
    return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


def packed(m, k, v, density, gen):
    w = (torch.randn(m, k, generator=gen) * 0.02).to(torch.bfloat16).cuda()
    mask, perm = random_shflbw_mask(m, k, v, density, generator=gen)
    mask, perm = mask.cuda(), perm.cuda()
    return w, w * mask, ShflBWMatrix.from_dense(w, mask, perm, vector=v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="2048,4096")
    ap.add_argument("--sparsities", default="0.75,0.875")
    ap.add_argument("--vector", type=int, default=64)
    ap.add_argument("--cases", default="large", choices=sorted(CASES))
    ap.add_argument("--out", default="mlp.json")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    for (d, hdim), t, s in itertools.product(CASES[args.cases], map(int, args.tokens.split(",")), map(float, args.sparsities.split(","))):
        gen = torch.Generator().manual_seed(0)
        w1, w1m, p1 = packed(hdim, d, args.vector, 1 - s, gen)
        w2, w2m, p2 = packed(d, hdim, args.vector, 1 - s, gen)
        b1 = torch.randn(hdim, generator=gen).to(torch.bfloat16).cuda()
        b2 = torch.randn(d, generator=gen).to(torch.bfloat16).cuda()
        x = torch.randn(t, d, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(F.gelu(F.linear(x.float(), w1m.float(), b1.float())), w2m.float(), b2.float())
        ref_dense = F.linear(F.gelu(F.linear(x.float(), w1.float(), b1.float())), w2.float(), b2.float())
        block = PackedMLP(p1, p2, b1, b2, "gelu")
        name = f"D{d}-H{hdim}-T{t}-V{args.vector}-s{s}"
        dense_c = compile_static(dense_block, (d, hdim, t))
        rows = [
            gated("dense-eager", lambda: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), ref_dense, torch.bfloat16),
            gated("dense-compiled", lambda: dense_c(x, w1, b1, w2, b2), ref_dense, torch.bfloat16),
            gated("shflbw-mlp", lambda: mlp(x, block), ref, torch.bfloat16),
            # the same block as two per-layer token-major calls with GELU between (compress_(regions=False))
            gated("shflbw-per-layer", lambda: linear(F.gelu(linear(x, p1, b1)), p2, b2), ref, torch.bfloat16),
        ]
        base = min(r["us"] for r in rows[:2] if r["us"])
        for r in rows:
            r.update(case=name, speedup=base / r["us"] if r["us"] else None)
            result["rows"].append(r)
            print(format_row(name, r), flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
