"""Experiment: sweep launch configs of the feature-major kernel (shflbw.spmm) for V = 64 and 128.

    python prototype/sweep_fm.py --out sweep_fm.json

Prints the best config per (shape, V, sparsity) against dense; feeds kernels/configs.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig, spmm_fwd  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402

CONFIGS = {
    64: [SpmmConfig(bn, bk, w, st) for bn, bk, w, st in [
        (128, 64, 4, 3), (128, 64, 4, 4), (128, 64, 8, 4), (256, 64, 8, 3), (256, 32, 8, 4),
        (128, 32, 4, 5), (64, 128, 4, 3), (256, 64, 4, 3)]],
    128: [SpmmConfig(bn, bk, w, st) for bn, bk, w, st in [
        (128, 32, 8, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 32, 4, 4), (64, 64, 4, 3),
        (256, 32, 8, 3), (128, 64, 4, 3), (256, 64, 8, 3)]],
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="sweep_fm.json")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    for (m, k), v, s in itertools.product([(4096, 4096), (11008, 4096)], (64, 128), (0.75, 0.875)):
        t = 4096
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(m, k, generator=gen).to(torch.bfloat16).cuda()
        mask, perm = random_shflbw_mask(m, k, v, 1 - s, generator=gen)
        p = ShflBWMatrix.from_dense(w, mask.cuda(), perm.cuda(), vector=v)
        xt = torch.randn(k, t, device="cuda", dtype=torch.bfloat16)
        ref = (w * mask.cuda()).float() @ xt.float()
        dense = gated("dense", lambda: w @ xt, w.float() @ xt.float(), torch.bfloat16)
        best = None
        for cfg in CONFIGS[v]:
            r = gated(str(cfg), lambda: spmm_fwd(p.values, p.col_idx, p.group_ptr, p.perm, xt, m, cfg), ref, torch.bfloat16)
            r.update(case=f"M{m}-K{k}-T{t}-V{v}-s{s}", speedup=dense["us"] / r["us"] if r["us"] else None)
            result["rows"].append(r)
            if r["us"] and (best is None or r["us"] < best["us"]):
                best = r
        print(f"M{m}-K{k}-T{t}-V{v}-s{s}: dense {dense['us']:.1f} us, best {best['variant']} {best['us']:.1f} us "
              f"{best['speedup']:.2f}x", flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
