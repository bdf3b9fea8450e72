"""Experiment: T = 32-512 tokens, token-major linear, as CUDA-graph replays on both sides.

    python prototype/sweep_medium_t.py --out medium_t.json [--tokens 32,64,128,256,512]

Question: does the split-K decode kernel (X transposed first, tensor-core [BT, V] tiles, partial
sums finished in the same launch) beat the current dispatch ('decode' up to T = 32, then the
transpose-scatter path, the roundtrip from T = 512) at medium T, and with which splits / BK / BT?
Every variant is gated on correctness before it is timed.
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
from prototype.sweep_small_t import packed  # noqa: E402
from shflbw.kernels.decode import DecodeConfig  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig  # noqa: E402


def variants(t, which):
    out = []
    if which == "check":
        # the dispatch's alternatives: the roundtrip, the decode kernel at its plan, split-K with atomics
        out.append(("roundtrip", dict(path="roundtrip")))
        out.append(("decode-xt-plan", dict(path="decode", decode_config=DecodeConfig(block_k=128, num_warps=4, num_stages=5, transpose_x=True))))
        for splits, bn in itertools.product((2, 4, 8), (64, 128)):
            out.append((f"splitk-s{splits}-bn{bn}", dict(path="splitk", splits=splits, config=SpmmConfig(bn, 32, 4, 5))))
        return out
    for splits, bk, bt, nw, st in itertools.product((1, 2, 4, 8), (64, 128), (64, 128), (4, 8), (5,)):
        if bt > max(64, t) or (nw == 8 and (bt == 64 or bk == 64)):
            continue
        out.append((f"xt-s{splits}-bk{bk}-bt{bt}-w{nw}-st{st}",
                    dict(path="decode", splits=splits, reduce="fixup",
                         decode_config=DecodeConfig(block_k=bk, num_warps=nw, num_stages=st, transpose_x=True, block_t=bt))))
    for bn in (64, 128):
        out.append((f"transpose-bn{bn}", dict(path="transpose", config=SpmmConfig(bn, 32, 4, 5))))
        out.append((f"roundtrip-bn{bn}", dict(path="roundtrip", config=SpmmConfig(bn, 32, 4, 5))))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="medium_t.json")
    ap.add_argument("--tokens", default="32,64,128,256,512")
    ap.add_argument("--sparsities", default="0.5,0.75,0.875")
    ap.add_argument("--rep", type=int, default=60)
    ap.add_argument("--variants", default="full", choices=["full", "check"])
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008,14336x4096")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    shapes = [tuple(int(d) for d in sh.split("x")) for sh in args.shapes.split(",")]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    for (m, k), s in itertools.product(shapes, sparsities):
        w, wm, p = packed(m, k, 64, s)
        bias = torch.randn(m, device="cuda", dtype=torch.bfloat16)
        pargs = (p.values, p.col_idx, p.group_ptr, p.perm, bias, m)
        for t in (int(x) for x in args.tokens.split(",")):
            case = f"M{m}-K{k}-T{t}-V64-s{s}"
            x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16)
            ref = F.linear(x.float(), wm.float(), bias.float())
            dense = gated("dense-graph", lambda: F.linear(x, w, bias), F.linear(x.float(), w.float(), bias.float()),
                          torch.bfloat16, graph=True, rep=args.rep)
            rows = [gated("current-graph", lambda: linear_fwd(x, *pargs), ref, torch.bfloat16, graph=True, rep=args.rep)]
            for name, kw in variants(t, args.variants):
                rows.append(gated(name, lambda: linear_fwd(x, *pargs, **kw), ref, torch.bfloat16, graph=True, rep=args.rep))
            for r in [dense] + rows:
                r.update(case=case, speedup=dense["us"] / r["us"] if r["us"] else None)
                result["rows"].append(r)
            ok = [r for r in rows if r["us"]]
            best = min(ok, key=lambda r: r["us"])
            bad = [r["variant"] for r in rows if not r["us"]]
            print(f"{case:30s} dense {dense['us']:6.1f} | current {rows[0]['speedup'] or 0:5.2f}x | best {best['variant']:28s} "
                  f"{best['speedup']:5.2f}x" + (f" | WRONG {bad}" if bad else ""), flush=True)
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
