"""Experiment: the one-token decode kernel with its next step's loads issued early (gemv_prefetch).

    python prototype/sweep_decode_prefetch.py --out decode_prefetch.json

Why: at T = 1 the CUDA-core kernel streams 1-4 [BK, V] value tiles a program; each step waited for
its column indices, then the feature gather, then the tile (BENCHMARKS.md "Decode default": 16 us
for 22.5 MB of values on 11008 x 4096 at 75 %, where bandwidth alone would take ~6 us).
``DecodeConfig(gemv_prefetch=True)`` keeps the next step's tile and indices in flight during this
step's multiply-adds. This sweeps it against the current plan over split counts, BK and warps, on
the decode suite's layers at 50 / 75 / 87.5 %, CUDA-graph replays on both sides, every variant
gated against the fp32 product on the masked weight before it is timed.
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

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.configs import decode_plan, sm_count  # noqa: E402
from shflbw.kernels.decode import DecodeConfig  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (3072, 768)]


def packed(m, k, v, s):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    mask, perm = random_shflbw_mask(m, k, v, 1 - s, generator=gen)
    p = ShflBWMatrix.from_dense(w, mask, perm, vector=v).to("cuda")
    return w.cuda(), (w * mask).cuda(), p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="decode_prefetch.json")
    ap.add_argument("--rep", type=int, default=200, help="ms of repeats per timing")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    sms = sm_count(torch.device("cuda"))
    for (m, k), s in itertools.product(SHAPES, (0.5, 0.75, 0.875)):
        w, wm, p = packed(m, k, 64, s)
        bias = torch.randn(m, device="cuda", dtype=torch.bfloat16)
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(x.float(), wm.float(), bias.float())
        pargs = (p.values, p.col_idx, p.group_ptr, p.perm, bias, m)
        case = f"M{m}-K{k}-T1-V64-s{s}"
        dense = gated("dense", lambda: F.linear(x, w, bias), F.linear(x.float(), w.float(), bias.float()),
                      torch.bfloat16, graph=True, rep=args.rep)
        n_groups = p.group_ptr.numel() - 1
        rows = []

        def add(name, fn):
            r = gated(name, fn, ref, torch.bfloat16, graph=True, rep=args.rep)
            r.update(case=case, dense_us=dense["us"], speedup=dense["us"] / r["us"] if r["us"] else None)
            rows.append(r)
            result["rows"].append(r)

        add("plan", lambda: linear_fwd(x, *pargs))
        for bk, nw in ((128, 4), (64, 4), (256, 8), (128, 8)):
            cfg = DecodeConfig(block_k=bk, num_warps=nw, gemv_prefetch=True)
            _, plan_splits = decode_plan(n_groups, 64, p.col_idx.numel(), 1, sms, cfg)
            for splits in sorted({max(1, plan_splits // 2), plan_splits, min(8, plan_splits * 2)}):
                add(f"prefetch-bk{bk}-w{nw}-s{splits}",
                    lambda: linear_fwd(x, *pargs, path="decode", splits=splits, decode_config=cfg, reduce="fixup"))
            if (bk, nw) == (128, 4):
                plain = DecodeConfig(block_k=bk, num_warps=nw)
                add(f"plain-bk{bk}-w{nw}-s{plan_splits}",
                    lambda: linear_fwd(x, *pargs, path="decode", splits=plan_splits, decode_config=plain, reduce="fixup"))
        ok = [r for r in rows if r["us"]]
        best = min(ok, key=lambda r: r["us"])
        plan = rows[0]
        print(f"{case:26s} dense {dense['us']:6.1f} us | plan {plan['us'] or 0:6.1f} us {plan['speedup'] or 0:5.2f}x | "
              f"best {best['variant']:24s} {best['us']:6.1f} us {best['speedup']:5.2f}x | wrong "
              f"{sum(r['status'] != 'ok' for r in rows)}", flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
