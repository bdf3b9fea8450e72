"""Experiment: pipeline depth (num_stages) of the gather kernels: feature-major SpMM, decode, conv.

    python prototype/sweep_stages.py --out stages.json [--part spmm|decode|conv|all]

Why: the PTX of the feature-major kernel (Triton 3.9, sm_90, compiled without a GPU) shows that
with num_stages 3 or 4 its K loop waits for *every* outstanding cp.async at the top of each
iteration (cp.async.wait_group 0, two shared buffers): the column-index load feeding the gather's
addresses is committed last, so waiting for it drains the prefetches. From num_stages 5 the wait is
wait_group 3 with three buffers; from 8, wait_group 6 and four. Nsight Compute agreed on the H200:
0.86 eligible warps per scheduler, 45 % issue-slot use (4096^2, T = 4096, 75 %, V = 64). The CUDA-core
decode loop (T = 1) is not pipelined at all unless tl.range(num_stages=...) asks for it.
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
from shflbw.kernels.conv2d import ConvConfig, conv2d_chwn  # noqa: E402
from shflbw.kernels.decode import DecodeConfig  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig, spmm_fwd  # noqa: E402
from prototype.conv_probe import LAYERS, conv_problem  # noqa: E402
from prototype.sweep_small_t import packed  # noqa: E402

SPMM = {
    64: [(128, 64, 4, 3), (128, 64, 4, 5), (128, 64, 4, 8), (128, 32, 4, 5), (128, 32, 4, 7), (128, 128, 4, 5),
         (256, 64, 8, 5), (64, 64, 4, 5)],
    128: [(128, 64, 4, 3), (128, 64, 4, 5), (128, 64, 8, 5), (128, 32, 4, 5), (128, 32, 8, 7), (256, 32, 8, 5)],
}


# Short reductions at long token counts: BERT-large's 1024-wide layers at 256 x 128 tokens, where
# each group keeps 256 columns at 75 % (8 steps of 32) and a 5-stage pipeline spends much of its
# loop filling up (prototype/profile_e2e.py: the SpMMs at 1.46x of cuBLAS there).
SHORT_K = [(128, 32, 4, 5), (128, 32, 4, 3), (128, 64, 4, 3), (128, 64, 4, 4), (256, 32, 8, 4), (256, 64, 8, 3),
           (64, 32, 4, 5), (128, 128, 4, 3)]


def short_k_part(result, out):
    t = 32768
    for (m, k), s in itertools.product([(1024, 1024), (4096, 1024), (1024, 4096)], (0.75, 0.875)):
        w, wm, p = packed(m, k, 64, s)
        b = torch.randn(k, t, device="cuda", dtype=torch.bfloat16)
        ref = wm.float() @ b.float()
        dense = gated("dense w@b", lambda: w @ b, w.float() @ b.float(), torch.bfloat16)
        row = {"part": "short_k", "case": f"M{m}-K{k}-T{t}-V64-s{s}", "dense_us": dense["us"], "variants": {}}
        for bn, bk, nw, st in SHORT_K:
            cfg = SpmmConfig(bn, bk, nw, st)
            r = gated(str(cfg), lambda: spmm_fwd(p.values, p.col_idx, p.group_ptr, p.perm, b, m, config=cfg), ref,
                      torch.bfloat16)
            row["variants"][f"{bn},{bk},{nw},{st}"] = r["us"] and round(dense["us"] / r["us"], 3)
        emit(result, out, row)


def emit(result, out, row):
    result["rows"].append(row)
    print(json.dumps(row), flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def spmm_part(result, out):
    t = 4096
    cases = [((4096, 4096), 64, 0.75), ((11008, 4096), 64, 0.75), ((4096, 11008), 64, 0.75), ((14336, 4096), 64, 0.75),
             ((4096, 4096), 64, 0.5), ((4096, 4096), 64, 0.875), ((11008, 4096), 64, 0.875),
             ((4096, 4096), 128, 0.75), ((11008, 4096), 128, 0.75)]
    for (m, k), v, s in cases:
        w, wm, p = packed(m, k, v, s)
        b = torch.randn(k, t, device="cuda", dtype=torch.bfloat16)
        ref = wm.float() @ b.float()
        dense = gated("dense w@b", lambda: w @ b, w.float() @ b.float(), torch.bfloat16)
        row = {"part": "spmm", "case": f"M{m}-K{k}-T{t}-V{v}-s{s}", "dense_us": dense["us"], "variants": {}}
        for bn, bk, nw, st in SPMM[v]:
            cfg = SpmmConfig(bn, bk, nw, st)
            r = gated(str(cfg), lambda: spmm_fwd(p.values, p.col_idx, p.group_ptr, p.perm, b, m, config=cfg), ref,
                      torch.bfloat16)
            row["variants"][f"{bn},{bk},{nw},{st}"] = r["us"] and round(dense["us"] / r["us"], 3)
        emit(result, out, row)


def decode_part(result, out):
    for (m, k), s in itertools.product([(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)], (0.5, 0.75, 0.875)):
        w, wm, p = packed(m, k, 64, s)
        for t in (1, 16):
            x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16)
            ref = F.linear(x.float(), wm.float())
            dense = gated("dense", lambda: F.linear(x, w), F.linear(x.float(), w.float()), torch.bfloat16, graph=True)
            row = {"part": "decode", "case": f"M{m}-K{k}-T{t}-V64-s{s}", "dense_us": dense["us"], "variants": {}}
            if t == 1:
                variants = [(f"bk{bk}-gs{gs}-sp{sp}", DecodeConfig(block_k=bk, gemv_stages=gs), sp)
                            for bk, gs, sp in itertools.product((64, 128), (1, 2, 3, 4), (None, 4))]
            else:
                variants = [(f"bk{bk}-w{nw}-st{st}", DecodeConfig(block_k=bk, num_warps=nw, num_stages=st, transpose_x=True), None)
                            for bk, nw, st in [(256, 8, 3), (256, 8, 4), (256, 8, 5), (128, 4, 3), (128, 4, 5), (128, 8, 5)]]
            for label, cfg, sp in variants:
                r = gated(label, lambda: linear_fwd(x, p.values, p.col_idx, p.group_ptr, p.perm, None, m, path="decode",
                                                     decode_config=cfg, splits=sp), ref, torch.bfloat16, graph=True)
                row["variants"][label] = r["us"] and round(dense["us"] / r["us"], 3)
            emit(result, out, row)


CONV = LAYERS  # prototype/conv_probe.py's ResNet-50 / VGG-16 layers


def conv_part(result, out, rep=100):
    torch.backends.cudnn.benchmark = True
    for name, cin, cout, k, st, pad, h in CONV:
        w, p, x, ref, dref, xcl, wcl = conv_problem(cin, cout, k, st, pad, h)
        d1 = gated("cudnn-nchw", lambda: F.conv2d(x, w, stride=st, padding=pad), dref, torch.bfloat16, rep=rep)
        d2 = gated("cudnn-cl", lambda: F.conv2d(xcl, wcl, stride=st, padding=pad), dref, torch.bfloat16, rep=rep)
        best = min(r["us"] for r in (d1, d2) if r["us"])
        xc = x.permute(1, 2, 3, 0).contiguous()
        ref_c = ref.permute(1, 2, 3, 0)
        row = {"part": "conv", "case": name, "dense_us": best, "variants": {}}
        for bn, bk, nw, ns in [(128, 64, 4, 3), (128, 64, 4, 4), (128, 64, 4, 5), (128, 32, 4, 5), (64, 64, 4, 5),
                               (128, 64, 8, 5), (256, 64, 8, 5)]:
            cfg = ConvConfig(block_n=bn, block_k=bk, num_warps=nw, num_stages=ns)
            r = gated(str(cfg), lambda: conv2d_chwn(xc, p.values, p.col_idx, p.group_ptr, p.perm, None, cout, (cin, k, k),
                                                   (st, st), (pad, pad), (1, 1), config=cfg), ref_c, torch.bfloat16, rep=rep)
            row["variants"][f"{bn},{bk},{nw},{ns}"] = r["us"] and round(best / r["us"], 3)
        emit(result, out, row)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="stages.json")
    ap.add_argument("--part", default="all", choices=["spmm", "short_k", "decode", "conv", "all"])
    ap.add_argument("--rep", type=int, default=100, help="ms of repeats per timing (conv part)")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    for name, fn in [("spmm", spmm_part), ("short_k", short_k_part), ("conv", conv_part), ("decode", decode_part)]:
        if args.part in (name, "all"):
            fn(result, args.out, rep=args.rep) if name == "conv" else fn(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
