"""Experiment: small and medium token counts (decode T <= 16, T = 128-2048), token-major linear.

    python prototype/sweep_small_t.py --out small_t.json [--part decode|medium|all]

Decode (CUDA-graph replays on both sides): the split-K kernel finishing its sums in the same launch
(reduce='fixup') against float32 atomics plus finishing launches, over splits / BK / row slices.
Medium T (eager and graph): split-K feature-major (transpose in, atomics into a float32
feature-major buffer, transpose back with bias and cast) against the roundtrip and the current
dispatch. Every variant is gated on correctness before it is timed.
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
from shflbw.kernels.decode import DecodeConfig  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402


def packed(m, k, v, s, dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(m, k, generator=gen).to(dtype).cuda()
    mask, perm = random_shflbw_mask(m, k, v, 1 - s, generator=gen)
    p = ShflBWMatrix.from_dense(w, mask.cuda(), perm.cuda(), vector=v)
    return w, (w * mask.cuda()), p


OUT_PATH = "small_t.json"


def save(result):
    with open(OUT_PATH, "w") as f:
        json.dump(result, f, indent=1)


def record(result, case, dense, r):
    r.update(case=case, speedup=dense["us"] / r["us"] if r["us"] else None)
    result["rows"].append(r)
    return r


def decode_part(result):
    shapes = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (3072, 768)]
    for (m, k), s in itertools.product(shapes, (0.5, 0.75, 0.875)):
        w, wm, p = packed(m, k, 64, s)
        bias = torch.randn(m, device="cuda", dtype=torch.bfloat16)
        args = (p.values, p.col_idx, p.group_ptr, p.perm, bias, m)
        for t in (1, 16):
            case = f"M{m}-K{k}-T{t}-V64-s{s}"
            x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16)
            ref = F.linear(x.float(), wm.float(), bias.float())
            dense = gated("dense", lambda: F.linear(x, w, bias), F.linear(x.float(), w.float(), bias.float()),
                          torch.bfloat16, graph=True)
            rows = [record(result, case, dense, gated("current", lambda: linear_fwd(x, *args, path="decode", reduce="atomic"),
                                                      ref, torch.bfloat16, graph=True))]
            rows.append(record(result, case, dense, gated("plan", lambda: linear_fwd(x, *args), ref, torch.bfloat16,
                                                          graph=True)))
            variants = [(2, 128, 64, 4, False), (4, 128, 64, 4, False), (1, 128, 64, 4, False)]
            if t == 1:
                variants += [(s_, bk, 64, nw, True) for s_, bk, nw in [(2, 128, 4), (4, 128, 4), (8, 128, 4), (4, 256, 8)]]
            else:
                variants += [(s_, bk, 64, nw, "xt") for s_, bk, nw in [(1, 128, 4), (2, 128, 4), (4, 128, 4), (2, 64, 4),
                                                                        (4, 64, 4), (8, 64, 4), (2, 256, 8), (1, 256, 8)]]
            for splits, bk, vs, nw, gemv in variants:
                name = f"fixup-s{splits}-bk{bk}-w{nw}" + ("-gemv" if gemv is True else "-xt" if gemv == "xt" else "")
                dcfg = DecodeConfig(block_k=bk, num_warps=nw, gemv=gemv is True, transpose_x=gemv == "xt")
                fn = lambda: linear_fwd(x, *args, path="decode", splits=splits, row_slice=vs,  # noqa: E731
                                        decode_config=dcfg, reduce="fixup")
                rows.append(record(result, case, dense, gated(name, fn, ref, torch.bfloat16, graph=True)))
            best = min((r for r in rows if r["us"]), key=lambda r: r["us"])
            cur = rows[0]
            print(f"{case:32s} dense {dense['us']:6.1f} | current {cur['speedup'] or 0:5.2f}x | best {best['variant']:22s} "
                  f"{best['speedup']:5.2f}x", flush=True)
            save(result)


def medium_part(result):
    shapes = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (1024, 4096)]
    for (m, k), v, s in itertools.product(shapes, (64, 128), (0.5, 0.75, 0.875)):
        if v == 128 and s != 0.75:
            continue
        w, wm, p = packed(m, k, v, s)
        bias = torch.randn(m, device="cuda", dtype=torch.bfloat16)
        args = (p.values, p.col_idx, p.group_ptr, p.perm, bias, m)
        for t in (128, 512, 1024, 2048):
            case = f"M{m}-K{k}-T{t}-V{v}-s{s}"
            x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16)
            ref = F.linear(x.float(), wm.float(), bias.float())
            dref = F.linear(x.float(), w.float(), bias.float())
            dense = gated("dense", lambda: F.linear(x, w, bias), dref, torch.bfloat16)
            dense_g = gated("dense-graph", lambda: F.linear(x, w, bias), dref, torch.bfloat16, graph=True)
            rows = [record(result, case, dense, gated("current", lambda: linear_fwd(x, *args), ref, torch.bfloat16)),
                    record(result, case, dense, gated("roundtrip", lambda: linear_fwd(x, *args, path="roundtrip"),
                                                      ref, torch.bfloat16))]
            for splits, bn, bk in [(2, 64, 64), (4, 64, 64), (8, 64, 64), (2, 128, 64), (4, 128, 64), (8, 128, 64),
                                   (16, 64, 64), (4, 64, 32)]:
                cfg = SpmmConfig(bn, bk, 4, 3)
                fn = lambda: linear_fwd(x, *args, path="splitk", splits=splits, config=cfg)  # noqa: E731
                rows.append(record(result, case, dense, gated(f"splitk-s{splits}-bn{bn}-bk{bk}", fn, ref, torch.bfloat16)))
            best = min((r for r in rows if r["us"]), key=lambda r: r["us"])
            # the winner again as graph replays, against dense replays
            bname = best["variant"]
            if bname.startswith("splitk"):
                sp, bn, bk = (int(x[2:]) if x.startswith("bn") or x.startswith("bk") else int(x[1:]) for x in bname.split("-")[1:])
                cfgb = SpmmConfig(bn, bk, 4, 3)
                fnb = lambda: linear_fwd(x, *args, path="splitk", splits=sp, config=cfgb)  # noqa: E731
            elif bname == "roundtrip":
                fnb = lambda: linear_fwd(x, *args, path="roundtrip")  # noqa: E731
            else:
                fnb = lambda: linear_fwd(x, *args)  # noqa: E731
            bg = record(result, case, dense_g, gated(bname + "-graph", fnb, ref, torch.bfloat16, graph=True))
            print(f"{case:32s} dense {dense['us']:6.1f} (graph {dense_g['us']:6.1f}) | current {rows[0]['speedup'] or 0:5.2f}x "
                  f"| roundtrip {rows[1]['speedup'] or 0:5.2f}x | best {bname:22s} {best['speedup']:5.2f}x "
                  f"graph {bg['speedup'] or 0:5.2f}x", flush=True)
            save(result)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="small_t.json")
    ap.add_argument("--part", default="all", choices=["decode", "medium", "all"])
    args = ap.parse_args()
    global OUT_PATH
    OUT_PATH = args.out
    result = {"stamp": stamp(), "rows": []}
    if args.part in ("decode", "all"):
        decode_part(result)
    if args.part in ("medium", "all"):
        medium_part(result)
    save(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
