"""Experiment (session 18): the token-major CUDA kernel of tm_mma.cu beside dense and shflbw.linear.

    python prototype/tm_mma.py --out tm_mma.json          # on a GPU: gate, then time
    python prototype/tm_mma.py --emulate                  # anywhere: packing + lane-level simulation
    python prototype/tm_mma.py --dry-run                  # anywhere: this harness and tm_mlp.py's,
                                                          # kernels emulated, times faked

Why: issue #5's token-major bar (2.0x at 75 %, T >= 2048) is unmet at V = 64 (1.52-1.89x on the
H200, 1.19-1.52x on the H100) because the Triton path transposes X and the output around a
feature-major kernel (57 us of 165 at 4096^2 on the H100). tm_mma.cu gathers from a staged
token-major tile instead. Before it is timed, every variant's output (NaN-poisoned first) is
compared with F.linear on the masked weight in float32; a wrong one reports no time. Times are
CUDA-graph replays (median of do_bench), dense first, in one process.

What the first run decides (written before it, in session 18):
- integrate: if the best variant with F.linear's output order (through perm, or group order then
  tm_permute.cu) beats shflbw.linear at T >= 512 on the same card, it moves into
  src/shflbw/kernels/ as the sm_90 token-major path, the Triton path kept as its fallback;
- the next bound: cluster-of-2 faster than per-CTA means X's L2 bytes bound it (multicast the
  weights along token tiles next); a busy tensor pipe in the ncu counters means wgmma next;
- the pattern: if even group order stays under 2.0x at 4096^2, T = 4096, 75 %, this route does
  not reach #5's token-major bar at V = 64 either, and that goes to the steering with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

import tm_build  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402
from tm_build import Variant, launch, permute_cols  # noqa: E402
from tm_pack import VEC, emulate, prepare, simulate_lanes, wavefronts  # noqa: E402

DEVICE = "cuda"  # dry_run() sets "cpu"


CASES = [  # (out, in, tokens, sparsity, dtype)
    (4000, 4088, 1000, 0.75, "bfloat16"),  # tails everywhere: correctness
    (4096, 4096, 4096, 0.75, "bfloat16"), (11008, 4096, 4096, 0.75, "bfloat16"),
    (4096, 11008, 4096, 0.75, "bfloat16"), (14336, 4096, 4096, 0.75, "bfloat16"),
    (4096, 4096, 4096, 0.5, "bfloat16"), (4096, 4096, 4096, 0.875, "bfloat16"), (4096, 4096, 2048, 0.75, "bfloat16"),
    (4096, 4096, 512, 0.75, "bfloat16"), (11008, 4096, 512, 0.75, "bfloat16"), (4096, 4096, 128, 0.75, "bfloat16"),
    (4096, 11008, 256, 0.75, "bfloat16"),
    (4000, 4088, 1000, 0.75, "float16"), (4096, 4096, 4096, 0.75, "float16"),
]
VARIANTS = [
    Variant("tm", 256, 2, "sorted"), Variant("tm", 256, 2), Variant("tm", 256, 3), Variant("tm", 128, 3), Variant("tm", 128, 3, gpc=2),
    Variant("tm", 256, 2, dtype="float16"), Variant("tm", 128, 3, straddle=True), Variant("tm", 256, 3, straddle=True),
    Variant("tm", 256, 2, out="group"), Variant("tm", 256, 2, out="permute"), Variant("tm", 256, 3, straddle=True, out="permute"),
    Variant("tm", 128, 3, gpc=2, out="permute", max_tokens=512),
    Variant("tm", 128, 3, gpc=2, out="splitk", splits=2, max_tokens=512),
    Variant("tm", 128, 3, gpc=2, out="splitk", splits=4, max_tokens=512),
    Variant("tm", 128, 3, out="splitk", splits=4, max_tokens=512),
    Variant("cluster", 256, 2), Variant("cluster", 256, 2, cl=2), Variant("cluster", 128, 3, cl=2),
    Variant("cluster", 256, 3, cl=2), Variant("cluster", 128, 3, cl=2, gpc=2), Variant("cluster", 128, 4, cl=4, gpc=2),
    Variant("cluster", 256, 2, cl=2, dtype="float16"), Variant("cluster", 128, 3, cl=2, straddle=True),
    Variant("cluster", 256, 3, cl=2, straddle=True), Variant("cluster", 256, 2, cl=2, out="group"),
    Variant("cluster", 256, 2, cl=2, out="permute"), Variant("cluster", 256, 3, cl=2, straddle=True, out="permute"),
]


def diagnose(v: Variant, kernel) -> dict:
    """One group, one CTA: the error by (token mod 16, output position mod 8), the fragment's own
    coordinates, so that a wrong lane mapping shows which index it mixes up."""
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(64, 256, generator=gen).to(torch.bfloat16)
    mask, perm = random_shflbw_mask(64, 256, VEC, 0.25, generator=gen)
    w = ShflBWMatrix.from_dense(weight.to(DEVICE), mask.to(DEVICE), perm.to(DEVICE), vector=VEC)
    x = torch.randn(128, 256, generator=gen).to(torch.bfloat16).to(DEVICE)
    p = prepare(w, v.kc, v.order, v.straddle)
    out = torch.full((128, 64), float("nan"), device=DEVICE, dtype=torch.bfloat16)
    launch(v, kernel, p, x, None, out)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    ref = F.linear(x.float(), (weight.float() * mask).to(DEVICE))
    bad = ((out.float() - ref).abs() > 0.05 * ref.abs().max()) | ~torch.isfinite(out.float())
    inv = torch.empty(64, dtype=torch.long)
    inv[perm] = torch.arange(64)  # original row -> permuted position
    pos = inv.to(DEVICE)[None, :].expand(128, 64)
    tok = torch.arange(128, device=DEVICE)[:, None].expand(128, 64)
    table = torch.zeros(16, 8)
    for a in range(16):
        for b in range(8):
            sel = (tok % 16 == a) & (pos % 8 == b)
            table[a, b] = bad[sel].float().mean()
    print(f"diagnosis: {int(bad.sum())} of {bad.numel()} wrong; by (token % 16, position % 8):\n{table}", flush=True)
    return {"wrong": int(bad.sum()), "by_token16_pos8": table.tolist()}


def run_gpu(out_path: str, kinds: tuple[str, ...]) -> int:
    from benchmarks.run_linear import stamp
    from benchmarks.timing import GATE, median_us, rel_error
    from shflbw.kernels.linear import linear_fwd

    kernels = {}
    for v in (v for v in VARIANTS if v.kind in kinds):
        try:
            kernels[v] = tm_build.compile_variant(v)
        except Exception as e:  # noqa: BLE001 - a variant that does not build is reported, the others run
            print(f"variant {v} did not build: {type(e).__name__}: {str(e)[:2000]}", flush=True)
    permute = tm_build.compile_permute() if any(v.out == "permute" for v in kernels) else None
    finish = {d: tm_build.compile_permute(True, d == "float16") for d in {v.dtype for v in kernels if v.out == "splitk"}}
    first = [next((v for v in kernels if v.kind == kind and v.dtype == "bfloat16" and v.out == "scatter"), None)
             for kind in sorted({v.kind for v in kernels})]
    result = {"stamp": stamp(), "rows": [], "diagnosis": {v.name: diagnose(v, kernels[v]) for v in first if v}}
    gen = torch.Generator().manual_seed(0)
    for m, k, t, sparsity, dtype_name in CASES:
        dtype = getattr(torch, dtype_name)
        weight = torch.randn(m, k, generator=gen).to(dtype)
        mask, perm = random_shflbw_mask(m, k, VEC, 1 - sparsity, generator=gen)
        weight, mask, perm = weight.to(DEVICE), mask.to(DEVICE), perm.to(DEVICE)
        w = ShflBWMatrix.from_dense(weight, mask, perm, vector=VEC)
        x = torch.randn(t, k, device=DEVICE).to(dtype)
        bias = torch.randn(m, device=DEVICE).to(dtype)
        masked = (weight * mask).float()
        ref = F.linear(x.float(), masked, bias.float())
        case = f"{m}x{k} T={t} s={sparsity} {dtype_name}"
        dense_us = median_us(lambda: F.linear(x, weight, bias), graph=True)
        rows = [("dense", dense_us, 0.0)]
        args = (w.values, w.col_idx, w.group_ptr, w.perm, bias, m)
        err = rel_error(linear_fwd(x, *args), ref)
        tol = GATE[dtype]
        rows.append(("shflbw.linear", median_us(lambda: linear_fwd(x, *args), graph=True) if err < tol else None, err))
        width = w.num_groups * VEC
        ref_g = torch.zeros(t, width, device=DEVICE)  # group order: column p holds original row perm[p]
        ref_g[:, :m] = ref[:, w.perm.long()]
        inv = torch.empty(m, dtype=torch.int32, device=DEVICE)
        inv[w.perm.long()] = torch.arange(m, dtype=torch.int32, device=DEVICE)
        packs = {}  # variants that differ only in how they run share one packing
        for v, kernel in kernels.items():
            if v.dtype != dtype_name or (v.max_tokens and t > v.max_tokens):
                continue
            key = (v.kc, v.order, v.straddle)
            p = packs[key] = packs.get(key) or prepare(w, *key)
            out = torch.full((t, m if v.out != "group" else width), float("nan"), device=DEVICE, dtype=dtype)
            if v.out == "splitk":
                sums = torch.empty(t, width, device=DEVICE, dtype=torch.float32)

                def run(v=v, kernel=kernel, p=p, out=out, sums=sums):
                    sums.zero_()
                    return permute_cols(finish[v.dtype], launch(v, kernel, p, x, bias, sums), inv, out, bias)
            elif v.out == "permute":
                out_g = torch.empty(t, width, device=DEVICE, dtype=dtype)

                def run(v=v, kernel=kernel, p=p, out=out, out_g=out_g):
                    return permute_cols(permute, launch(v, kernel, p, x, bias, out_g), inv, out)
            else:
                def run(v=v, kernel=kernel, p=p, out=out):
                    return launch(v, kernel, p, x, bias, out)
            err = rel_error(run(), ref_g if v.out == "group" else ref)
            us = median_us(run, graph=True) if err < tol else None
            rows.append((f"{v.name} pad{p['pad']:.2f}", us, err))
            del out, run
        del packs
        record(result, case, rows, dense_us, out_path)
    return 0


def record(result: dict, case: str, rows: list, base_us: float, out_path: str, width: int = 36) -> None:
    """Append one case's (variant, us, error) rows with speedups against base_us, print them, save all."""
    for name, us, err in rows:
        sp = base_us / us if us else None
        result["rows"].append({"case": case, "variant": name, "us": us, "error": err, "speedup": sp})
        print(f"{case:36s} {name:{width}s} " + (f"{us:8.1f} us {sp:5.2f}x" if us else f"WRONG err={err:.3g}"), flush=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


class EmulatedKernel:
    """Stands in for a compiled variant in dry_run(): the kernel's arguments in, emulate()'s result out
    in the layout the build options say (scatter, group order, GELU)."""

    def __init__(self, v: Variant):
        self.v = v

    def __call__(self, grid, block, shared_mem, args):
        x, wfrag, cfrag, step_ptr, perm, bias, out, t, k, m, groups, chunks, has_bias = args
        p = {"wfrag": wfrag, "cfrag": cfrag, "step_ptr": step_ptr, "perm": perm, "m": m, "k": k,
             "groups": groups, "chunks": chunks, "kc": self.v.kc}
        if self.v.out == "splitk":  # every split's float32 sums added into the zeroed buffer, no bias
            y = emulate(p, x, None)
            out[:, :m] += y[:, perm.long()]
            return
        y = emulate(p, x, bias if has_bias else None)  # [t, m], original order, bias added
        y = F.gelu(y, approximate="tanh") if self.v.gelu else y
        if self.v.out == "scatter":
            out.copy_(y)
        else:
            y_g = torch.zeros(t, groups * VEC)
            y_g[:, :m] = y[:, perm.long()]
            out.copy_(y_g)  # padding rows: act(0) = 0


class EmulatedPermute:
    def __init__(self, finish: bool = False, half: bool = False):
        pass

    def __call__(self, grid, block, shared_mem, args):
        src, inv, dst, t, width, m, bias, has_bias = args
        dst.copy_(src[:, inv.long()].float() + (bias.float() if has_bias else 0))


def dry_run() -> int:
    """The GPU harness (run_gpu, tm_mlp.run_gpu) on the CPU with small shapes: kernels emulated,
    times faked, so a slip in its own code is found here and not in a scarce device call."""
    global DEVICE, CASES
    import benchmarks.run_linear
    import benchmarks.timing
    import tm_mlp

    DEVICE, tm_mlp.DEVICE = "cpu", "cpu"
    CASES = [(200, 136, 70, 0.75, "bfloat16"), (128, 256, 130, 0.5, "float16"), (136, 520, 300, 0.75, "bfloat16")]
    tm_mlp.CASES = [(64, 200)]
    tm_build.compile_variant = EmulatedKernel  # both harnesses build through tm_build
    tm_build.compile_permute = EmulatedPermute
    benchmarks.timing.median_us = lambda fn, graph=False, rep=100: (fn(), 1.0)[1]
    benchmarks.run_linear.stamp = lambda: {"dry_run": True}
    import shflbw.kernels.linear
    from shflbw.ops.reference import linear_fwd_ref

    shflbw.kernels.linear.linear_fwd = linear_fwd_ref
    torch.compile = lambda fn, **kw: fn
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rc = run_gpu(os.path.join(d, "tm.json"), ("tm", "cluster"))
        rows = json.load(open(os.path.join(d, "tm.json")))["rows"]
        rc |= tm_mlp.run_gpu(os.path.join(d, "mlp.json"), [70], [0.75])
        rows += json.load(open(os.path.join(d, "mlp.json")))["rows"]
    wrong = [r for r in rows if r["us"] is None]
    print(f"dry run: {len(rows)} rows, {len(wrong)} wrong" + "".join(f"\n  {r['case']} {r['variant']}" for r in wrong))
    return rc or int(bool(wrong))


def run_emulate() -> int:
    gen = torch.Generator().manual_seed(1)
    for m, k, t, kc, empty, order, straddle in [
            (200, 72, 5, 64, (1,), "sorted", False), (128, 300, 3, 128, (), "sorted", False),
            (64, 40, 2, 64, (0,), "sorted", False), (200, 300, 5, 64, (1,), "quads", False),
            (130, 520, 3, 256, (), "quads", False), (200, 300, 5, 64, (1,), "sorted", True),
            (130, 1100, 3, 256, (), "sorted", True), (130, 1100, 3, 256, (2,), "quads", True)]:
        weight = torch.randn(m, k, generator=gen)
        mask, perm = random_shflbw_mask(m, k, VEC, 0.3, generator=gen, empty_groups=empty)
        w = ShflBWMatrix.from_dense(weight.to(torch.bfloat16), mask, perm, vector=VEC)
        x = torch.randn(t, k, generator=gen).to(torch.bfloat16)
        bias = torch.randn(m, generator=gen)
        p = prepare(w, kc, order, straddle)
        ref = F.linear(x.float(), (weight.to(torch.bfloat16).float() * mask), bias)
        got = emulate(p, x, bias)
        err = ((got - ref).norm() / ref.norm()).item()
        print(f"emulate {m}x{k} T={t} kc={kc} empty={empty} {order}{' straddle' if straddle else ''}: "
              f"rel err {err:.2e}, pad {p['pad']:.2f}, "
              f"wavefronts per load {wavefronts(p):.2f}")
        if not err < 1e-5:
            return 1
    # the kernel's own lane arithmetic, on two chunks, a token tail and a group tail
    weight = torch.randn(100, 512, generator=gen)
    mask, perm = random_shflbw_mask(100, 512, VEC, 0.3, generator=gen)
    w = ShflBWMatrix.from_dense(weight.to(torch.bfloat16), mask, perm, vector=VEC)
    x = torch.randn(70, 512, generator=gen).to(torch.bfloat16)
    bias = torch.randn(100, generator=gen).to(torch.bfloat16)
    ref = F.linear(x.float(), weight.to(torch.bfloat16).float() * mask, bias.float())
    for order, straddle, kc in (("sorted", False, 256), ("quads", False, 256), ("quads", True, 128)):
        got = simulate_lanes(prepare(w, kc, order, straddle), x, bias)
        err = ((got - ref).norm() / ref.norm()).item()
        print(f"lane simulation 100x512 T=70 kc={kc} {order}{' straddle' if straddle else ''}: rel err {err:.2e}")
        if not err < 1e-5:
            return 1
    p = prepare(w, 256, "quads")
    got = simulate_lanes(p, x, bias, group_out=True)
    ref_g = torch.zeros(70, p["groups"] * VEC)
    ref_g[:, :100] = ref[:, perm]
    err = ((got - ref_g).norm() / ref_g.norm()).item()
    print(f"lane simulation, group-order output: rel err {err:.2e}")
    if not err < 1e-5:
        return 1
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tm_mma.json")
    ap.add_argument("--emulate", action="store_true")
    ap.add_argument("--kinds", default="tm,cluster", help="kernels to run: tm, cluster (default: both)")
    ap.add_argument("--dry-run", action="store_true", help="the harness on the CPU, kernels emulated")
    a = ap.parse_args()
    if a.dry_run:
        sys.exit(dry_run())
    sys.exit(run_emulate() if a.emulate else run_gpu(a.out, tuple(a.kinds.split(","))))
