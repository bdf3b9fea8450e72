"""Experiment: the conv kernel's offsets-plus-interior-tiles rewrite against the flat-index kernel.

    python prototype/sweep_conv.py --out sweep_conv.json [--models resnet50,vgg16] [--rep 50]

Why: Nsight Compute put the linear kernel's integer pipe above its tensor cores (BENCHMARKS.md,
session 3), and the conv kernel did more integer work per gathered element: (ho, wo, n) decoded from
a flat index, an int64 address and six bounds tests on every element of every step. The rewrite
splits the address into a per-column and a per-position offset (one add per element) and runs
tiles whose windows all lie inside the image without any bounds test. Every layer of the conv
registry (batch 64, 75 %, V = 64), CUDA-graph replays, all in one process: the best cuDNN (NCHW or
channels_last), the kernel at several launch configs and, for 1x1 stride-1 layers, the linear SpMM
kernel on the (C, H*W*N) view. Gated on correctness. The run at commit af6d0f6 (BENCHMARKS.md,
session 5) also timed the old kernel (src/shflbw/kernels/conv2d.py at commit 2193e14), since removed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.conv_cases import LAYERS, weighted_geomean  # noqa: E402
from benchmarks.run_conv import conv_problem  # noqa: E402
from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated  # noqa: E402
from shflbw.kernels.conv2d import ConvConfig, conv2d_chwn  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig, spmm_fwd  # noqa: E402

# (BN, BK, warps, stages). With 1 stage Triton issues plain ld.global (through L1) instead of
# cp.async.cg (L2 only; PTX for sm_90 compiled here: 96 ld.global, no cp.async): a 3x3 window's
# taps re-read overlapping runs of the same channel, which L1 might then serve (not yet measured;
# session 5 read the kernel as L2-bound).
NEW = [(128, 64, 4, 3), (128, 32, 4, 5), (128, 64, 4, 5), (64, 32, 4, 5), (256, 32, 8, 5), (128, 32, 8, 5),
       (128, 32, 4, 1), (128, 64, 8, 1)]
# 1x1 stride-1 convs run the SpMM kernel (the default first). The expansions (64 -> 256 @ 56,
# 128 -> 512 @ 28) keep 16-32 columns a group: one or two [BK] steps, so a 5-stage prologue may
# cost more than it hides (not yet measured).
SPMM_1X1 = [SpmmConfig(128, 32, 4, 5), SpmmConfig(128, 32, 4, 2), SpmmConfig(128, 64, 4, 1), SpmmConfig(256, 32, 8, 2),
            SpmmConfig(128, 32, 4, 5, programs_per_sm=3)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,vgg16")
    ap.add_argument("--rep", type=int, default=50)
    ap.add_argument("--out", default="sweep_conv.json")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    result = {"stamp": stamp(), "rows": []}
    for model in args.models.split(","):
        per_variant: dict[str, list] = {}
        for layer in LAYERS[model]:
            k, st, pad = layer.kernel, layer.stride, layer.padding
            w, p, x, ref, dref, xcl, wcl = conv_problem(layer.cin, layer.cout, k, st, pad, layer.size)
            timed = dict(graph=True, rep=args.rep)
            nchw = gated("cudnn-nchw", lambda: F.conv2d(x, w, stride=st, padding=pad), dref, torch.bfloat16, **timed)
            cl = gated("cudnn-cl", lambda: F.conv2d(xcl, wcl, stride=st, padding=pad), dref, torch.bfloat16, **timed)
            best = min(r["us"] for r in (nchw, cl) if r["us"])
            xc = x.permute(1, 2, 3, 0).contiguous()
            args_ = (p.values, p.col_idx, p.group_ptr, p.perm, None, layer.cout, (layer.cin, k, k), (st, st), (pad, pad),
                     (1, 1))
            # the library's default dispatch (conv_config, or spmm_config for 1x1 stride-1 layers)
            variants = {"default": gated("default", lambda: conv2d_chwn(xc, *args_).permute(3, 0, 1, 2), ref,
                                         torch.bfloat16, **timed)}
            for bn, bk, nw, ns in NEW:
                cfg = ConvConfig(bn, bk, nw, ns)
                variants[f"{bn},{bk},{nw},{ns}"] = gated(str(cfg), lambda: conv2d_chwn(xc, *args_, config=cfg).permute(
                    3, 0, 1, 2), ref, torch.bfloat16, **timed)
            if k == 1 and st == 1:
                xm = xc.view(layer.cin, -1)
                shape = (layer.cout, layer.size, layer.size, x.shape[0])
                for cfg in SPMM_1X1:
                    variants[f"spmm {cfg.block_n},{cfg.block_k},{cfg.num_warps},{cfg.num_stages},p{cfg.programs_per_sm}"] = gated(
                        "spmm", lambda: spmm_fwd(p.values, p.col_idx, p.group_ptr, p.perm, xm, layer.cout, cfg).view(
                            shape).permute(3, 0, 1, 2), ref, torch.bfloat16, **timed)
            row = {"case": layer.name, "count": layer.count, "cudnn_best_us": best,
                   "variants": {n: (r["us"], r["us"] and round(best / r["us"], 3)) for n, r in variants.items()}}
            result["rows"].append(row)
            for n, r in variants.items():
                per_variant.setdefault(n, []).append((best / r["us"], layer.count) if r["us"] else None)
            print(f"{layer.name:36s} cudnn {best:7.1f} us | " + " ".join(
                f"{n} {best / r['us']:.2f}x" if r["us"] else f"{n} {r['status']}" for n, r in variants.items()), flush=True)
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        for n, vals in per_variant.items():
            if len(vals) == len(LAYERS[model]) and all(vals):
                g = weighted_geomean(vals)
                result.setdefault("geomeans", {})[f"{model} {n}"] = g
                print(f"== {model} {n}: geometric mean {g:.2f}x", flush=True)
        # best new config per layer (an oracle: what per-shape dispatch could reach)
        oracle = [(max(v[1] for n, v in row["variants"].items() if not n.startswith("spmm") and n != "default" and v[1]), row["count"])
                  for row in result["rows"] if row["case"].startswith(model)]
        print(f"== {model} best new config per layer: {weighted_geomean(oracle):.2f}x", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
