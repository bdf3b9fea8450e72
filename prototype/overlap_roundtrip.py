"""Experiment: overlap the roundtrip's transposes with the SpMM by cutting the tokens into chunks.

    python prototype/overlap_roundtrip.py --out overlap.json [--budget 240]

The token-major roundtrip (kernels/linear.py) runs three kernels in sequence: X -> X^T (HBM-bound),
the feature-major SpMM (L2-bound at V = 64: its gathers and value panels move ~9 TB/s through L2
at 4096^2, T = 4096, 75 %), and the output back to token-major (HBM-bound). About a third of its
time at T = 4096 is the two transposes. Token tiles are independent, so with the tokens cut into
chunks, the transpose of chunk i+1 and the transpose back of chunk i-1 can run while the SpMM works
on chunk i, on other streams (captured into one CUDA graph with fork/join events). Whether the
block scheduler lets them share the SMs, and with which stream priorities, is the question.

Variants (all CUDA-graph replays, dense F.linear replays as 1.00x, every variant gated):
- roundtrip: the library's path (one transpose, one SpMM, one transpose back);
- chunked-1s-cN: the same three kernels per chunk on one stream (the cost of chunking alone);
- overlap-cN-pP: transposes in on one stream, SpMM on a second, transposes back on a third,
  N chunks; P = 1 gives the transpose streams high priority (their blocks go ahead of the SpMM's
  pending ones);
- fused-cN-kP[-rR]: prototype/roundtrip_fused.py, one persistent kernel (P programs an SM, registers
  capped at R) whose programs interleave the transpose tiles with the SpMM tiles, N chunks
  (c1: no overlap, the cost of the fused form alone); fused-cN-grid[-rR]: one program per task.

Result (session 16, H100, BENCHMARKS.md): no variant beats the roundtrip consistently; the SpMM alone
(1.69-2.10x at 75 %) is the ceiling any overlap could reach.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated, median_us  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.configs import packed_spmm_config  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.spmm import launch_spmm  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402
from prototype.roundtrip_fused import _transpose_tile, roundtrip_fused  # noqa: E402


@triton.jit
def _transpose_into(x_ptr, y_ptr, R, C, stride_xr, stride_xc, stride_yc, stride_yr,
                    BR: tl.constexpr, BC: tl.constexpr):
    # y[c, r] = x[r, c], both at any strides (one [BR, BC] tile a program)
    _transpose_tile(x_ptr, y_ptr, R, C, stride_xr, stride_xc, stride_yc, stride_yr, tl.program_id(0),
                    tl.program_id(1), BR, BC)


def transpose_into(x: torch.Tensor, y: torch.Tensor) -> None:
    r, c = x.shape
    assert y.shape == (c, r)
    _transpose_into[(triton.cdiv(r, 64), triton.cdiv(c, 64))](
        x, y, r, c, x.stride(0), x.stride(1), y.stride(0), y.stride(1), BR=64, BC=64, num_warps=4)


class Chunked:
    """The roundtrip over ``chunks`` token chunks, on one stream or three."""

    def __init__(self, p: ShflBWMatrix, bias, t: int, chunks: int, streams: int, priority: bool):
        self.p, self.bias, self.t, self.chunks = p, bias, t, chunks
        self.c = t // chunks
        self.cfg = packed_spmm_config(p.values, p.group_ptr, self.c)
        self.streams = None
        if streams == 3:
            prio = -1 if priority else 0
            self.streams = (torch.cuda.Stream(priority=prio), torch.cuda.Stream(), torch.cuda.Stream(priority=prio))
        self.ev_in = [torch.cuda.Event() for _ in range(chunks)]
        self.ev_mm = [torch.cuda.Event() for _ in range(chunks)]

    def __call__(self, x2: torch.Tensor) -> torch.Tensor:
        p, c, m, k = self.p, self.c, self.p.shape[0], x2.shape[1]
        out = torch.empty(self.t, m, dtype=x2.dtype, device=x2.device)
        xt = torch.empty(k, self.t, dtype=x2.dtype, device=x2.device)
        ofm = torch.empty(m, self.t, dtype=x2.dtype, device=x2.device)

        def step_in(i):
            transpose_into(x2[i * c:(i + 1) * c], xt[:, i * c:(i + 1) * c])

        def step_mm(i):
            launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, xt[:, i * c:(i + 1) * c], self.bias,
                        ofm[:, i * c:(i + 1) * c], (self.t, 1), self.cfg)

        def step_out(i):
            transpose_into(ofm[:, i * c:(i + 1) * c], out[i * c:(i + 1) * c])

        if self.streams is None:
            for i in range(self.chunks):
                step_in(i)
                step_mm(i)
                step_out(i)
            return out
        main = torch.cuda.current_stream()
        s_in, s_mm, s_out = self.streams
        for s in self.streams:
            s.wait_stream(main)
        for i in range(self.chunks):
            with torch.cuda.stream(s_in):
                step_in(i)
                self.ev_in[i].record(s_in)
            with torch.cuda.stream(s_mm):
                s_mm.wait_event(self.ev_in[i])
                step_mm(i)
                self.ev_mm[i].record(s_mm)
            with torch.cuda.stream(s_out):
                s_out.wait_event(self.ev_mm[i])
                step_out(i)
        for s in self.streams:
            main.wait_stream(s)
        return out


def try_gated(name, fn, ref):
    """gated(), with a failure (compile error, launch error) recorded instead of ending the run."""
    try:
        return gated(name, fn, ref, torch.bfloat16, graph=True)
    except Exception as e:  # noqa: BLE001 - an experiment: keep the other variants' numbers
        try:
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001 - a sticky CUDA error: the next case will say so
            pass
        return {"variant": name, "us": None, "status": f"FAILED {type(e).__name__}: {str(e)[:200]}"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="overlap.json")
    ap.add_argument("--budget", type=float, default=240.0, help="seconds; cases past it are skipped")
    ap.add_argument("--only", default="", help="run only the chunked/overlap/fused variants whose name "
                    "contains this (dense, the roundtrip and its parts always run)")
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008,14336x4096")
    args = ap.parse_args()
    t0 = time.monotonic()
    result = {"stamp": stamp(), "rows": []}
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    cases = [(mk, tt, 0.75) for tt in (4096, 2048, 8192) for mk in shapes]
    cases += [(mk, 4096, s) for s in (0.5, 0.875) for mk in shapes]
    for (m, k), t, s in cases:
        if time.monotonic() - t0 > args.budget:
            print(f"budget reached: skipping M{m}-K{k}-T{t}-s{s}", flush=True)
            continue
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(m, k, generator=gen).to(torch.bfloat16).cuda()
        mask, perm = random_shflbw_mask(m, k, 64, 1 - s, generator=gen)
        p = ShflBWMatrix.from_dense(w, mask.cuda(), perm.cuda(), vector=64)
        wm = w * mask.cuda()
        bias = torch.randn(m, generator=gen).to(torch.bfloat16).cuda()
        x = torch.randn(t, k, generator=gen).to(torch.bfloat16).cuda()
        ref = (x.float() @ wm.float().t() + bias.float())
        case = f"M{m}-K{k}-T{t}-V64-s{s}"
        dense = {"variant": "dense", "us": median_us(lambda: F.linear(x, w, bias), graph=True)}  # cuBLAS, unmasked

        def add(r):
            # one row at a time, printed and saved: a variant that hangs (the fused kernel spins on
            # counters) leaves every earlier number behind when the device call's timeout ends it
            r["case"] = case
            part = r["variant"].startswith("part-")
            r["speedup"] = dense["us"] / r["us"] if r.get("us") and not part else None
            result["rows"].append(r)
            shown = f"{r['us']:.1f} us" if part or r["variant"] == "dense" else (
                f"{r['speedup']:.2f}x" if r["speedup"] else r.get("status"))
            print(f"{case} {r['variant']}: {shown}", flush=True)
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)

        add(dense)
        add(try_gated("roundtrip", lambda: linear_fwd(x, p.values, p.col_idx, p.group_ptr, p.perm, bias, m,
                                                      path="roundtrip"), ref))
        # the roundtrip's three kernels alone (timed only, not outputs), to read the overlap against
        xt = torch.empty(k, t, dtype=x.dtype, device=x.device)
        ofm = torch.empty(m, t, dtype=x.dtype, device=x.device)
        y = torch.empty(t, m, dtype=x.dtype, device=x.device)
        cfg = packed_spmm_config(p.values, p.group_ptr, t)
        parts = {"part-transpose-in": lambda: transpose_into(x, xt),
                 "part-spmm": lambda: launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, xt, bias, ofm, (t, 1), cfg),
                 "part-transpose-out": lambda: transpose_into(ofm, y)}
        for name, fn in parts.items():
            add({"variant": name, "us": median_us(fn, graph=True), "status": "part (not a result)"})
        variants = [("chunked-1s-c4", 4, 1, False)]
        variants += [(f"overlap-c{n}-p{int(pr)}", n, 3, pr) for n, pr in itertools.product((2, 4, 8), (False, True))]
        for name, n, st, pr in variants:
            if args.only not in name or t % n or (t // n) % 128:
                continue
            fn = Chunked(p, bias, t, n, st, pr)
            add(try_gated(name, lambda fn=fn: fn(x), ref))
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        # 2 programs an SM at the compiler's 255 registers; 3 with the cap at 168 (spills; roundtrip_fused)
        # "grid": one program per task, no task loop (213 registers uncapped, 116 B of spills at 168)
        for n, (per_sm, cap) in itertools.product((1, 2, 4, 8), ((2, None), (3, 168), ("grid", None), ("grid", 168))):
            if t % n or (t // n) % 128:
                continue
            name = f"fused-c{n}-" + (f"k{per_sm}" if per_sm != "grid" else "grid") + (f"-r{cap}" if cap else "")
            if args.only not in name:
                continue
            add(try_gated(name, lambda n=n, per_sm=per_sm, cap=cap: roundtrip_fused(
                x, p, bias, chunks=n, programs=None if per_sm == "grid" else per_sm * sms, maxnreg=cap,
                persistent=per_sm != "grid"), ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
