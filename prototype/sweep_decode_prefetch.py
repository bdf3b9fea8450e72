"""Experiment: the one-token decode kernel with its next step's loads issued early (gemv_prefetch),
and where the time of the T = 16 path goes.

    python prototype/sweep_decode_prefetch.py --out decode_prefetch.json [--part t1|t16|all]

Why: at T = 1 the CUDA-core kernel streams 1-4 [BK, V] value tiles a program; each step waited for
its column indices, then the feature gather, then the tile (BENCHMARKS.md "Decode default": 16 us
for 22.5 MB of values on 11008 x 4096 at 75 %, where bandwidth alone would take ~6 us).
``DecodeConfig(gemv_prefetch=1)`` keeps the next step's tile and indices in flight during this
step's multiply-adds (2: the indices one more step ahead). This sweeps them against the current
plan over split counts, BK and warps, on the decode suite's layers at 50 / 75 / 87.5 %, CUDA-graph
replays on both sides, every variant gated against the fp32 product on the masked weight before it
is timed. Session 12 (H100, BENCHMARKS.md): 0-6 % at best, so the plan is unchanged.

T = 16 (--part t16): the plan (X transposed by one launch, then the tensor-core tile kernel)
beside its two pieces timed alone (the transpose; the kernel on an already feature-major X) and
the kernel's configs (BK, warps, stages, splits) on that X.
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
from prototype.sweep_small_t import packed  # noqa: E402  (same seed-0 weights as the earlier decode sweeps)
from shflbw.kernels.configs import decode_plan, sm_count  # noqa: E402
from shflbw.kernels.decode import DecodeConfig, linear_decode  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.transpose import feature_major  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (3072, 768)]


def timer(result, case, dense, ref, rep):
    rows = []

    def add(name, fn, ref_=None):
        r = gated(name, fn, ref if ref_ is None else ref_, torch.bfloat16, graph=True, rep=rep)
        r.update(case=case, dense_us=dense["us"], speedup=dense["us"] / r["us"] if r["us"] else None)
        rows.append(r)
        result["rows"].append(r)
        return r

    return rows, add


def report(case, dense, rows):
    """One line: the plan, the best whole variant, and for T = 16 the pieces and the best kernel alone."""
    def best_of(prefixes, exclude=False):
        ok = [r for r in rows if r["us"] and (not r["variant"].startswith(prefixes)) == exclude]
        return min(ok, key=lambda r: r["us"]) if ok else None

    plan = rows[0]
    best = best_of(("piece", "kernel"), exclude=True)
    line = (f"{case:26s} dense {dense['us']:6.1f} us | plan {plan['us'] or 0:6.1f} us {plan['speedup'] or 0:5.2f}x | "
            f"best {best['variant']:24s} {best['us']:6.1f} us {best['speedup']:5.2f}x")
    kern = best_of(("kernel", "piece-kernel"))
    if kern:
        pieces = " ".join(f"{r['variant'][6:]} {r['us'] or 0:.1f}" for r in rows if r["variant"].startswith("piece"))
        line += f" | {pieces} | best kernel {kern['variant']} {kern['us']:.1f}"
    print(line + f" | wrong {sum(r['status'] != 'ok' for r in rows)}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="decode_prefetch.json")
    ap.add_argument("--part", default="all", choices=["t1", "t16", "all"])
    ap.add_argument("--rep", type=int, default=200, help="ms of repeats per timing")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    sms = sm_count(torch.device("cuda"))
    tokens = {"t1": (1,), "t16": (16,), "all": (1, 16)}[args.part]
    for t, (m, k), s in itertools.product(tokens, SHAPES, (0.5, 0.75, 0.875)):
        if t == 16 and k < 2048:
            continue  # small K keeps the token-major tile (configs.decode_config)
        w, wm, p = packed(m, k, 64, s)
        bias = torch.randn(m, device="cuda", dtype=torch.bfloat16)
        x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(x.float(), wm.float(), bias.float())
        pargs = (p.values, p.col_idx, p.group_ptr, p.perm, bias, m)
        n_groups, nnz = p.group_ptr.numel() - 1, p.col_idx.numel()
        case = f"M{m}-K{k}-T{t}-V64-s{s}"
        dense = gated("dense", lambda: F.linear(x, w, bias), F.linear(x.float(), w.float(), bias.float()),
                      torch.bfloat16, graph=True, rep=args.rep)
        rows, add = timer(result, case, dense, ref, args.rep)
        add("plan", lambda: linear_fwd(x, *pargs))
        if t == 1:
            for pf, bk, nw in ((1, 128, 4), (2, 128, 4), (2, 64, 4), (2, 256, 8), (2, 128, 8)):
                cfg = DecodeConfig(block_k=bk, num_warps=nw, gemv_prefetch=pf)
                _, plan_splits = decode_plan(n_groups, 64, nnz, 1, sms, cfg)
                for splits in sorted({max(1, plan_splits // 2), plan_splits, min(8, plan_splits * 2)}):
                    add(f"prefetch{pf}-bk{bk}-w{nw}-s{splits}",
                        lambda: linear_fwd(x, *pargs, path="decode", splits=splits, decode_config=cfg, reduce="fixup"))
        else:
            xt = feature_major(x).t()  # [T, K] view of a [K, T] buffer, as the plan makes it
            add("piece-transpose", lambda: feature_major(x), x.t())
            for bk, nw, st in ((128, 4, 5), (64, 4, 5), (256, 8, 3), (256, 8, 5), (128, 4, 3), (128, 8, 5), (64, 4, 7)):
                cfg = DecodeConfig(block_k=bk, num_warps=nw, num_stages=st, transpose_x=True)
                _, plan_splits = decode_plan(n_groups, 64, nnz, t, sms, cfg)
                for splits in sorted({plan_splits, min(8, plan_splits * 2), max(1, plan_splits // 2)}):
                    name = f"kernel-bk{bk}-w{nw}-st{st}-s{splits}"
                    if (bk, nw, st) == (128, 4, 5) and splits == plan_splits:
                        name = "piece-kernel-plan"
                    add(name, lambda: linear_decode(xt, *pargs, splits, config=cfg))
        report(case, dense, rows)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
