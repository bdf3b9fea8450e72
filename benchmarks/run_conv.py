"""Benchmark the Shfl-BW conv against cuDNN on every distinct ResNet-50 / VGG-16 conv layer (GPU).

    python benchmarks/run_conv.py --out conv.json [--models resnet50,vgg16] [--batches 32,64]
        [--sparsities 0.5,0.75,0.875] [--vectors 32,64,128]

Per layer: cuDNN in NCHW and channels_last (cudnn.benchmark on; the faster counts as 1.00x) and
shflbw's implicit-GEMM kernel in its own batch-innermost layout (C, H, W, N), every one timed as
CUDA-graph replays (the op's ~150 us of host time per eager call on the H200 machine exceeds the
GPU time of ResNet's small layers: BENCHMARKS.md), beside the two layout conversions (PyTorch
permute copies NCHW -> CHWN and back to channels_last), reported, not added. Gated: the sparse
output must match the fp32 conv on the masked weight. Prints the count-weighted geometric mean of
the speedups per model (issue #6: ResNet-50's convs, stem excluded).
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

from benchmarks.conv_cases import LAYERS, weighted_geomean  # noqa: E402
from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated, median_us  # noqa: E402


def conv_problem(cin, cout, k, st, pad, h, n=64, v=64, s=0.75):
    """(w, packed, x, masked fp32 reference, dense fp32 reference, x and w in channels_last), bf16 on the GPU."""
    from shflbw import ShflBWMatrix
    from shflbw.testing import random_shflbw_mask

    g = torch.Generator().manual_seed(0)
    w = torch.randn(cout, cin, k, k, generator=g).to(torch.bfloat16).cuda() * 0.05
    m2, perm = random_shflbw_mask(cout, cin * k * k, v, 1 - s, generator=g)
    mask = m2.view(cout, cin, k, k).cuda()
    p = ShflBWMatrix.from_dense(w, mask, perm.cuda(), vector=v)
    x = torch.randn(n, cin, h, h, device="cuda", dtype=torch.bfloat16)
    ref = F.conv2d(x.float(), (w * mask).float(), stride=st, padding=pad)
    dref = F.conv2d(x.float(), w.float(), stride=st, padding=pad)
    return w, p, x, ref, dref, x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)


def run_layer(layer, batch: int, sparsity: float, vector: int, rep: int) -> dict:
    from shflbw import conv2d_chwn

    st, pad = layer.stride, layer.padding
    w, p, x, ref, dref, xcl, wcl = conv_problem(layer.cin, layer.cout, layer.kernel, st, pad, layer.size, batch, vector,
                                                sparsity)
    nchw = gated("cudnn-nchw", lambda: F.conv2d(x, w, stride=st, padding=pad), dref, torch.bfloat16, graph=True, rep=rep)
    cl = gated("cudnn-cl", lambda: F.conv2d(xcl, wcl, stride=st, padding=pad), dref, torch.bfloat16, graph=True, rep=rep)
    xc = x.permute(1, 2, 3, 0).contiguous()
    sp = gated("shflbw-chwn", lambda: conv2d_chwn(xc, p, stride=st, padding=pad).permute(3, 0, 1, 2), ref, torch.bfloat16,
               graph=True, rep=rep)
    y = conv2d_chwn(xc, p, stride=st, padding=pad)
    to_chwn = median_us(lambda: x.permute(1, 2, 3, 0).contiguous(), graph=True, rep=rep)
    back = median_us(lambda: y.permute(3, 0, 1, 2).contiguous(memory_format=torch.channels_last), graph=True, rep=rep)
    best = min(r["us"] for r in (nchw, cl) if r["us"])
    return {"case": f"{layer.name} N{batch} V{vector} s{sparsity}", "model": layer.model, "count": layer.count,
            "batch": batch, "vector": vector, "sparsity": sparsity, "cudnn_nchw_us": nchw["us"], "cudnn_cl_us": cl["us"],
            "shflbw_us": sp["us"], "status": sp["status"], "error": sp["error"], "to_chwn_us": to_chwn, "back_us": back,
            "speedup": best / sp["us"] if sp["us"] else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,vgg16")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--sparsities", default="0.75")
    ap.add_argument("--vectors", default="64")
    ap.add_argument("--rep", type=int, default=100, help="ms of repeats per timing (do_bench)")
    ap.add_argument("--out", default="bench_conv.json")
    args = ap.parse_args()
    models = args.models.split(",")
    for m in models:
        if m not in LAYERS:
            ap.error(f"unknown model {m!r}: choose from {sorted(LAYERS)}")
    if not torch.cuda.is_available():
        print("benchmarks need a CUDA GPU; none found", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    result = {"stamp": stamp(), "rows": []}
    grid = itertools.product(models, map(int, args.batches.split(",")), map(float, args.sparsities.split(",")),
                             map(int, args.vectors.split(",")))
    for model, batch, s, v in grid:
        rows = []
        for layer in LAYERS[model]:
            r = run_layer(layer, batch, s, v, args.rep)
            rows.append(r)
            result["rows"].append(r)
            sp = f"{r['speedup']:5.2f}x" if r["speedup"] else r["status"]
            print(f"{r['case']:44s} x{layer.count} cudnn nchw {r['cudnn_nchw_us'] or 0:7.1f} cl {r['cudnn_cl_us'] or 0:7.1f} "
                  f"| shflbw {r['shflbw_us'] or 0:7.1f} us {sp} | to CHWN {r['to_chwn_us']:6.1f} back {r['back_us']:6.1f}",
                  flush=True)
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        ok = [(r["speedup"], r["count"]) for r in rows if r["speedup"]]
        if len(ok) == len(rows):
            g = weighted_geomean(ok)
            result.setdefault("geomeans", []).append({"model": model, "batch": batch, "sparsity": s, "vector": v, "geomean": g})
            print(f"== {model} N{batch} V{v} s{s}: geometric mean over its {sum(c for _, c in ok)} convs {g:.2f}x", flush=True)
        else:
            print(f"== {model} N{batch} V{v} s{s}: {len(rows) - len(ok)} layer(s) failed the gate; no mean", flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
