"""Experiment: how fast can the feature-major SpMM's loads alone go? (its gather ceiling)

    python prototype/gather_ceiling.py --out gather_ceiling.json

At V = 64 the feature-major kernel (kernels/spmm.py) moves, per [V, BN] tile, the group's value
panel ([kept, V]) and its gathered rows of B ([kept, BN]) through L2: at 4096^2, T = 4096, 75 %,
BN = 128, about 537 MB of gathered rows and 268 MB of values, against 32 MB of output. If the
kernel takes about as long as these loads alone, it is bound by them and issue #5's 3.0x
feature-major bar at V = 64 needs fewer bytes a flop (larger V or BN), not a better pipeline.

Variants, same grid and tiles as the SpMM (groups fastest), CUDA-graph replays:
- spmm: the library's kernel (roundtrip config), gated against the fp32 product;
- loads: the same loads, each tile reduced with a cheap sum instead of the tensor-core product
  (plain ld.global into registers: the pipeline differs, so this is a rough ceiling);
- loads-b / loads-a: only the gathered rows / only the value panel.
Reported: microseconds and the bytes each moves per microsecond (TB/s).

Result (session 16, H100, BENCHMARKS.md): inconclusive. The loads-only variants ran 3.5-5x slower
than the SpMM: with no tl.dot consuming them Triton does not pipeline the loads, so they measure
latency, not a ceiling. A fair probe would keep the dot (e.g. vary only the gathered bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated, median_us  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.configs import packed_spmm_config  # noqa: E402
from shflbw.kernels.spmm import launch_spmm  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402


@triton.jit
def loads_kernel(vals_ptr, cols_ptr, gptr_ptr, b_ptr, out_ptr, N, V: tl.constexpr, BN: tl.constexpr,
                 BK: tl.constexpr, LOAD_A: tl.constexpr, LOAD_B: tl.constexpr):
    g = tl.program_id(0)
    pid_n = tl.program_id(1)
    start = tl.load(gptr_ptr + g)
    end = tl.load(gptr_ptr + g + 1)
    offs_v = tl.arange(0, V)
    offs_k = tl.arange(0, BK)
    offs_n = pid_n * BN + tl.arange(0, BN)
    acc_a = tl.zeros([V], dtype=tl.float32)
    acc_b = tl.zeros([BN], dtype=tl.float32)
    for k0 in range(start, end, BK):
        kk = k0 + offs_k
        k_ok = kk < end
        if LOAD_A:
            a = tl.load(vals_ptr + kk[:, None] * V + offs_v[None, :], mask=k_ok[:, None], other=0.0)
            acc_a += tl.sum(a.to(tl.float32), axis=0)
        if LOAD_B:
            cols = tl.load(cols_ptr + kk, mask=k_ok, other=0)
            b = tl.load(b_ptr + cols[:, None] * N + offs_n[None, :], mask=k_ok[:, None], other=0.0)
            acc_b += tl.sum(b.to(tl.float32), axis=0)
    # one value a program, so nothing is optimised away
    tl.store(out_ptr + g * tl.num_programs(1) + pid_n, tl.sum(acc_a, axis=0) + tl.sum(acc_b, axis=0))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gather_ceiling.json")
    ap.add_argument("--cases", default="4096x4096:4096:0.75,11008x4096:4096:0.75,4096x4096:4096:0.875,4096x1024:32768:0.75",
                    help="MxK:T:sparsity, comma-separated")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    for spec in args.cases.split(","):
        mk, t, s = spec.split(":")
        m, k = (int(v) for v in mk.split("x"))
        t, s = int(t), float(s)
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(m, k, generator=gen).to(torch.bfloat16).cuda()
        mask, perm = random_shflbw_mask(m, k, 64, 1 - s, generator=gen)
        p = ShflBWMatrix.from_dense(w, mask.cuda(), perm.cuda(), vector=64)
        xt = torch.randn(k, t, generator=gen).to(torch.bfloat16).cuda()
        ref = (w * mask.cuda()).float() @ xt.float()
        cfg = packed_spmm_config(p.values, p.group_ptr, t)
        g = p.group_ptr.numel() - 1
        out = torch.empty(m, t, dtype=torch.bfloat16, device="cuda")
        sink = torch.empty(g * triton.cdiv(t, cfg.block_n), dtype=torch.float32, device="cuda")
        case = f"M{m}-K{k}-T{t}-V64-s{s}"
        nnz = p.values.shape[0]
        tiles_n = triton.cdiv(t, cfg.block_n)
        bytes_b = nnz * cfg.block_n * 2 * tiles_n
        bytes_a = nnz * 64 * 2 * tiles_n
        r = gated("spmm", lambda: launch_spmm(p.values, p.col_idx, p.group_ptr, p.perm, xt, None, out, (t, 1), cfg),
                  ref, torch.bfloat16, graph=True)
        rows = [dict(r, bytes=bytes_a + bytes_b + m * t * 2)]
        for name, la, lb, nbytes in (("loads", True, True, bytes_a + bytes_b), ("loads-b", False, True, bytes_b),
                                     ("loads-a", True, False, bytes_a)):
            us = median_us(lambda la=la, lb=lb: loads_kernel[(g, tiles_n)](
                p.values, p.col_idx, p.group_ptr, xt, sink, t, V=64, BN=cfg.block_n, BK=cfg.block_k, LOAD_A=la,
                LOAD_B=lb, num_warps=cfg.num_warps, num_stages=cfg.num_stages), graph=True)
            rows.append({"variant": name, "us": us, "bytes": nbytes})
        for row in rows:
            row["case"] = case
            row["tb_per_s"] = row["bytes"] / row["us"] / 1e6 if row.get("us") else None
            result["rows"].append(row)
            print(f"{case} {row['variant']}: {row.get('us') or row.get('status')} us, "
                  f"{row['bytes'] / 1e6:.0f} MB, {row['tb_per_s'] or 0:.2f} TB/s", flush=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
