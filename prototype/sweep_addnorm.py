"""Experiment: launch configs of the add + LayerNorm kernel (kernels/addnorm.py) on the H200.

    python prototype/sweep_addnorm.py --out sweep_addnorm.json

Session 8: the walk is two passes with shifted sums (kernels/addnorm.py) and the tails mostly read
h alone (the SpMM adds the residual in its epilogue), so both cases are timed; torch's clone of h
gives the copy bandwidth this machine reaches.

Why: in the BERT-large profile (BENCHMARKS.md, session 5) the first default, a three-pass walk, took
126 us a call for 1024 x 32768 (h and the residual feature-major, bf16), about half of the bandwidth the
~200 MB it moves should allow, and 6.1 ms of a 30.4 ms forward. Variants: the three-pass walk at
several (BF, BT, warps), and the one-pass tile kept in registers (BT tokens x all F). Beside them,
PyTorch's add then layer_norm on token-major tensors (what the dense model runs). Every variant is
gated against an fp32 LayerNorm before it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated, median_us  # noqa: E402
from shflbw.kernels.addnorm import add_layernorm_fm  # noqa: E402
from shflbw.kernels.configs import AddNormConfig  # noqa: E402

# (BF, BT, warps, stages) of the two-pass walk (stages > 1: its loads pipelined through shared
# memory, session 8); (BT, warps) of the one-pass tile
WALK = [(64, 64, 8, 1), (64, 64, 8, 3), (64, 64, 8, 4), (32, 64, 4, 4), (64, 32, 4, 4), (64, 32, 4, 3), (128, 32, 8, 3),
        (32, 128, 8, 3), (64, 16, 2, 4), (128, 16, 4, 4), (32, 32, 2, 4), (64, 32, 4, 6)]
ONE_PASS = [(16, 4), (32, 8)]
# --norm-res (session 10): the residual is the raw input of a deferred LayerNorm (ops/deferred_norm.py),
# normalised as it is read; offline ptxas (prototype/regs_offline.py) showed BT 32 / 8 warps, the default
# for 1024 features with a residual, spilling 1240 B a thread there, BT 16 / 8 warps 128 B
ONE_PASS_NORM_RES = [(16, 4), (16, 8), (32, 8), (8, 4), (8, 2)]
# (features, tokens, with a residual): the tails read h alone when the SpMM added the residual
SHAPES = [(1024, 32768, False), (1024, 32768, True), (384, 32768, False), (384, 32768, True), (4096, 8192, True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="sweep_addnorm.json")
    ap.add_argument("--norm-res", action="store_true", help="only the tails of deferred-LayerNorm layers")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    if args.norm_res:
        return sweep_norm_res(args.out, result)
    for f, t, with_res in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        h = torch.randn(f, t, device="cuda", dtype=torch.bfloat16, generator=g)  # feature-major, as the SpMM writes
        r = torch.randn(f, t, device="cuda", dtype=torch.bfloat16, generator=g) if with_res else torch.zeros_like(h)
        w = torch.randn(f, device="cuda", dtype=torch.bfloat16, generator=g)
        b = torch.randn(f, device="cuda", dtype=torch.bfloat16, generator=g)
        ref = F.layer_norm((h.float() + r.float()).t(), (f,), w.float(), b.float(), 1e-12).t()
        htm, rtm = h.t().contiguous(), r.t().contiguous()
        variants = {"torch add + layer_norm (token-major)": gated(
            "torch", lambda: F.layer_norm(htm + rtm, (f,), w, b, 1e-12).t(), ref, torch.bfloat16)}
        rr = r if with_res else None
        for bf, bt, nw, st in WALK:
            variants[f"walk BF{bf} BT{bt} w{nw} s{st}"] = gated("walk", lambda: add_layernorm_fm(
                h, rr, w, b, 1e-12, AddNormConfig(False, bf, bt, nw, st)), ref, torch.bfloat16)
        for bt, nw in ONE_PASS:
            if triton_next_pow2(f) * bt > 128 * 32 * nw:  # over 128 fp32 registers a thread: spills
                continue
            variants[f"1-pass BT{bt} w{nw}"] = gated("1p", lambda: add_layernorm_fm(
                h, rr, w, b, 1e-12, AddNormConfig(True, 0, bt, nw)), ref, torch.bfloat16)
        variants["copy (torch clone, the bandwidth ceiling)"] = {"us": median_us(lambda: h.clone())}
        moved = (3 if with_res else 2) * f * t * 2  # read h (and r), write the result
        row = {"case": f"F{f}-T{t}" + ("+res" if with_res else ""),
               "variants": {k: (v["us"], v["us"] and round((2 * f * t * 2 if k.startswith("copy") else moved) / v["us"] / 1e3, 1))
                            for k, v in variants.items()}}
        result["rows"].append(row)
        for k, (us, gbs) in row["variants"].items():
            print(f"{row['case']:12s} {k:40s} " + (f"{us:8.1f} us {gbs:7.1f} GB/s" if us else "WRONG"), flush=True)
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


def sweep_norm_res(out: str, result: dict) -> int:
    for f, t in [(1024, 32768), (384, 32768)]:
        g = torch.Generator(device="cuda").manual_seed(0)
        h = torch.randn(f, t, device="cuda", dtype=torch.bfloat16, generator=g)
        raw = (torch.randn(f, t, device="cuda", generator=g) * 3 + 1).to(torch.bfloat16)
        rw = torch.randn(f, device="cuda", dtype=torch.bfloat16, generator=g)
        rb = torch.randn(f, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.randn(f, device="cuda", dtype=torch.bfloat16, generator=g)
        b = torch.randn(f, device="cuda", dtype=torch.bfloat16, generator=g)
        stats = torch.stack([raw.float().sum(0), raw.float().square().sum(0)])  # [2, T], as the SpMM's atomics add
        r_ref = F.layer_norm(raw.float().t(), (f,), rw.float(), rb.float(), 1e-12)
        ref = F.layer_norm(h.float().t() + r_ref, (f,), w.float(), b.float(), 1e-12).t()
        norm = (stats, rw, rb, 1e-12)
        variants = {}
        for bt, nw in ONE_PASS_NORM_RES:
            variants[f"1-pass BT{bt} w{nw}"] = gated("1p", lambda: add_layernorm_fm(
                h, raw, w, b, 1e-12, AddNormConfig(True, 0, bt, nw), residual_norm=norm), ref, torch.bfloat16)
        for bf, bt, nw, st in [(128, 32, 8, 3), (64, 32, 4, 4), (128, 16, 4, 4)]:
            variants[f"walk BF{bf} BT{bt} w{nw} s{st}"] = gated("walk", lambda: add_layernorm_fm(
                h, raw, w, b, 1e-12, AddNormConfig(False, bf, bt, nw, st), residual_norm=norm), ref, torch.bfloat16)
        moved = 3 * f * t * 2
        row = {"case": f"F{f}-T{t}+normres",
               "variants": {k: (v["us"], v["us"] and round(moved / v["us"] / 1e3, 1)) for k, v in variants.items()}}
        result["rows"].append(row)
        for k, (us, gbs) in row["variants"].items():
            print(f"{row['case']:18s} {k:40s} " + (f"{us:8.1f} us {gbs:7.1f} GB/s" if us else "WRONG"), flush=True)
        with open(out, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


def triton_next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


if __name__ == "__main__":
    sys.exit(main())
