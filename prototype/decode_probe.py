"""Experiment: where the T = 1 decode kernel's time goes, by leaving stages out, and what a dense
cuBLAS product of the same bytes takes.

    python prototype/decode_probe.py --out decode_probe.json [--chain 8] [--rep 100]

Why: on the H100 of session 12 the plan's T = 1 kernel (11008 x 4096, 75 %) took 18.8 us as a
one-kernel CUDA-graph replay against 46.3 us dense, and a one-kernel graph of a trivial transpose took
5.7 us: the kernel streams its 23.2 MB at ~1.7 TB/s after that floor, cuBLAS its 90 MB at ~2.2 TB/s.
Reordering the loads (gemv_prefetch) gained 0-6 %. This times, per layer, beside dense:

- ``plan``: the library's decode path (linear_fwd);
- ``plan-1split``, ``plan-Nsplits``: the same kernel with 1 or N programs per group (N not a power
  of two: decode_plan only picks powers of two);
- ``stream-grid``: the plan's grid and loop, values only (no column indices, no gather, no fix-up):
  what this decomposition streams at best;
- ``streamk-Nx``: the stream-K T = 1 kernel (kernels/decode_streamk.py, DecodeConfig.stream_k = N):
  N programs per SM, each taking an equal share of the weight's [BK] steps across row groups;
- ``stream-flat-P``: P programs each summing one contiguous share of the value array in [BK, V]
  tiles: the best Triton streaming of these bytes, whatever the decomposition;
- ``dense-same-bytes``: cuBLAS F.linear on a dense weight with as many bytes as the packed values
  and indices (the ratio a sparse kernel as good as cuBLAS could reach);

each as a one-kernel graph and (``--chain N``) per layer in a graph of N layers with their own
copies (timing.chain_us). The probes that compute no product are checked against their own torch
sums; the plan against the fp32 product on the masked weight.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated, gated_chain  # noqa: E402
from prototype.sweep_small_t import packed  # noqa: E402
from shflbw.kernels.configs import decode_config, decode_plan, sm_count  # noqa: E402
from shflbw.kernels.decode import DecodeConfig, linear_decode  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)]


@triton.jit
def stream_grid_kernel(vals_ptr, gptr_ptr, out_ptr, SPLITS, V: tl.constexpr, BK: tl.constexpr):
    """The decode kernel's grid and loop (group g, split s, every SPLITS-th [BK, V] tile), values only."""
    g = tl.program_id(0)
    s = tl.program_id(1)
    start = tl.load(gptr_ptr + g)
    end = tl.load(gptr_ptr + g + 1)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, V)
    acc = tl.zeros([BK, V], dtype=tl.float32)
    for k0 in range(start + s * BK, end, SPLITS * BK):
        kk = k0 + offs_k
        ok = kk < end
        acc += tl.load(vals_ptr + kk.to(tl.int64)[:, None] * V + offs_v[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
    tl.store(out_ptr + (g * SPLITS + s) * V + offs_v, tl.sum(acc, axis=0))


@triton.jit
def stream_flat_kernel(vals_ptr, rows, per_prog, out_ptr, V: tl.constexpr, BK: tl.constexpr):
    """Program p sums rows [p * per_prog, (p + 1) * per_prog) of the [rows, V] value array."""
    p = tl.program_id(0)
    lo = p * per_prog
    hi = tl.minimum(lo + per_prog, rows)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, V)
    acc = tl.zeros([BK, V], dtype=tl.float32)
    for k0 in range(lo, hi, BK):
        kk = k0 + offs_k
        ok = kk < hi
        acc += tl.load(vals_ptr + kk.to(tl.int64)[:, None] * V + offs_v[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
    tl.store(out_ptr + p * V + offs_v, tl.sum(acc, axis=0))


def probes(x, w, m, config, sms):
    """name -> (fn factory over a pack copy, reference) for one layer."""
    v = w.values.shape[1]
    n_groups = w.group_ptr.numel() - 1
    _, splits = decode_plan(n_groups, v, w.values.shape[0], 1, sms, config)
    bk = config.block_k

    def plan(p):
        return lambda: linear_fwd(x, *p, None, m)

    def one_split(p):
        return lambda: linear_decode(x, *p, None, m, 1, config)

    rows = w.values.shape[0]
    vals = w.values.float()
    gptr = w.group_ptr.long()
    group_of = torch.repeat_interleave(torch.arange(n_groups, device="cuda"), gptr[1:] - gptr[:-1])
    pos = torch.arange(rows, device="cuda") - gptr[group_of]
    slot = group_of * splits + (pos // bk) % splits

    def grid(p):
        out = torch.empty(n_groups * splits * v, device="cuda", dtype=torch.float32)

        def fn():  # the kernel alone: checked on its per-program sums
            stream_grid_kernel[(n_groups, splits)](p[0], p[2], out, splits, V=v, BK=bk, num_warps=config.num_warps)
            return out
        return fn

    def flat(p, programs):
        per = triton.cdiv(triton.cdiv(rows, programs), bk) * bk
        n = triton.cdiv(rows, per)
        out = torch.empty(n * v, device="cuda", dtype=torch.float32)

        def fn():
            stream_flat_kernel[(n,)](p[0], rows, per, out, V=v, BK=bk, num_warps=config.num_warps)
            return out
        return fn

    def flat_ref(programs):
        per = triton.cdiv(triton.cdiv(rows, programs), bk) * bk
        n = triton.cdiv(rows, per)
        return torch.zeros(n, v, device="cuda").index_add_(0, torch.arange(rows, device="cuda") // per, vals).flatten()

    def streamk(per_sm, bk_=bk, warps=config.num_warps):
        cfg = DecodeConfig(block_k=bk_, num_warps=warps, stream_k=per_sm)
        return lambda p: (lambda: linear_fwd(x, *p, None, m, path="decode", decode_config=cfg))

    out = {"plan": plan, "plan-1split": one_split, "stream-grid": grid}
    # Split counts that are not powers of two (decode_plan rounds to one): 11008 x 4096 at 75 % has
    # 172 groups of 8 steps, so 2 splits make 344 programs (0.65 waves of 4 per SM, Nsight Compute)
    # and 3 make 516 (0.98).
    for n in (3, 5, 6):
        out[f"plan-{n}splits"] = lambda p, n=n: (lambda: linear_decode(x, *p, None, m, n, config))
    for k in (2, 3, 4, 6):
        out[f"streamk-{k}x"] = streamk(k)
    out["streamk-4x-w8"] = streamk(4, warps=8)
    out["streamk-8x-bk64"] = streamk(8, 64)
    out["streamk-2x-bk256w8"] = streamk(2, 256, 8)
    refs = {"stream-grid": torch.zeros(n_groups * splits, v, device="cuda").index_add_(0, slot, vals).flatten()}
    for k in (2, 4, 8):
        out[f"stream-flat-{k}x"] = lambda p, k=k: flat(p, k * sms)
        refs[f"stream-flat-{k}x"] = flat_ref(k * sms)
    return out, refs, splits


def probes_t16(x, m, k):
    """T = 16: the plan (X transposed, then the split-K tile kernel) against the stream-K tile kernel."""
    base = decode_config(x.shape[0], k)
    out = {"plan": lambda p: (lambda: linear_fwd(x, *p, None, m))}
    for n in (2, 3):  # the plan's config with other split counts (the plan: 1 on the large layers)
        out[f"plan-{n}splits"] = lambda p, n=n: (lambda: linear_fwd(x, *p, None, m, path="decode", splits=n,
                                                                    decode_config=base))
    for n in (1, 2, 3, 4):
        cfg = replace(base, stream_k=n)
        out[f"streamk-{n}x"] = lambda p, cfg=cfg: (lambda: linear_fwd(x, *p, None, m, path="decode", decode_config=cfg))
    cfg = replace(base, stream_k=2, block_k=256, num_warps=8, num_stages=3)
    out["streamk-2x-bk256w8"] = lambda p: (lambda: linear_fwd(x, *p, None, m, path="decode", decode_config=cfg))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="decode_probe.json")
    ap.add_argument("--chain", type=int, default=8)
    ap.add_argument("--rep", type=int, default=100)
    ap.add_argument("--sparsities", default="0.75,0.875")
    ap.add_argument("--tokens", default="1,16")
    ap.add_argument("--shapes", default=",".join(f"{m}x{k}" for m, k in SHAPES), help="MxK,...")
    ap.add_argument("--only", default=None, help="a regular expression: time only the variants it matches (and dense)")
    args = ap.parse_args()
    only = re.compile(args.only) if args.only else None
    sms = sm_count(torch.device("cuda"))
    config = DecodeConfig()
    result = {"stamp": stamp(), "rows": []}
    bf16 = torch.bfloat16

    def timed(case, name, fns, ref, base, **extra):
        """The one-kernel graph and the chain of a variant (fns: one call per weight copy)."""
        r1 = gated(name, fns[0], ref, bf16, True, args.rep)
        rc = gated_chain(f"{name}-chain{len(fns)}", fns, ref, bf16, args.rep) if len(fns) > 1 else None
        for r, b in ((r1, base[0]), (rc, base[1])):
            if r:
                r.update(case=case, speedup=b / r["us"] if r["us"] and b else None, **extra)
                if "mb" in extra and r["us"]:
                    r["tb_s"] = extra["mb"] / r["us"]
                result["rows"].append(r)
                sp = f"{r['speedup']:.2f}x" if r.get("speedup") else ""
                us = f"{r['us']:.1f}" if r.get("us") else "-"
                print(f"{case:24s} {r['variant']:28s} {us:>8s} us {sp:>7s} {r['status']}", flush=True)
        return r1["us"], rc["us"] if rc else None

    for (m, k) in (tuple(map(int, sh.split("x"))) for sh in args.shapes.split(",")):
        for s in map(float, args.sparsities.split(",")):
            weight, masked, w = packed(m, k, 64, s)
            packs = [(w.values, w.col_idx, w.group_ptr, w.perm)]
            packs += [tuple(t.clone() for t in packs[0]) for _ in range(args.chain - 1)]
            nbytes = w.values.numel() * 2 + w.col_idx.numel() * 4
            same = torch.randn(max(1, round(nbytes / (2 * k))), k, device="cuda", dtype=bf16)
            dense_sets = {"dense": [weight] + [weight.clone() for _ in range(args.chain - 1)],
                          "dense-same-bytes": [same] + [same.clone() for _ in range(args.chain - 1)]}
            for t in map(int, args.tokens.split(",")):
                x = torch.randn(t, k, device="cuda", dtype=bf16)
                ref = F.linear(x.float(), masked.float())
                case = f"M{m}-K{k}-T{t}-s{s}"
                base = {}
                for name, ws in dense_sets.items():
                    if name != "dense" and only and not only.search(name):
                        continue
                    dense_ref = F.linear(x.float(), ws[0].float())
                    base[name] = timed(case, name, [lambda wi=wi: F.linear(x, wi) for wi in ws], dense_ref,
                                       base.get("dense", (None, None)), mb=ws[0].numel() * 2 / 1e6)
                if t == 1:
                    fns, refs, splits = probes(x, w, m, config, sms)
                else:
                    fns, refs, splits = probes_t16(x, m, k), {}, None
                for name, make in fns.items():
                    if only and not only.search(name):
                        continue
                    timed(case, name, [make(p) for p in packs], refs.get(name, ref), base["dense"],
                          splits=splits, mb=nbytes / 1e6)
                with open(args.out, "w") as f:
                    json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
