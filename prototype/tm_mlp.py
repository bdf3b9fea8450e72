"""Experiment (session 18): the sparse MLP block token-major end to end with the CUDA kernels.

    python prototype/tm_mlp.py --out tm_mlp.json      # on a GPU
    python prototype/tm_mlp.py --emulate              # anywhere: the layer-2 column fold

Why: issue #5's MLP bar is 2.6x at 75 % (4096-16384-4096 and 4096-11008-4096, T >= 2048); the
Triton block, feature-major inside with transposes at its edges, stands at 2.15-2.23x. Here:
- fc1 (tm_mma.cu built with GROUP_OUT and GELU) reads token-major X and writes GELU(X W1^T + b1)
  token-major in fc1's group order, coalesced;
- fc2 reads that directly: its weight's columns are relabelled to fc1's group order once at
  packing (W2[:, perm1], zero columns for fc1's padding rows), so the permutation costs nothing;
- fc2's output goes back to F.linear's order through tm_permute.cu (or the per-element scatter).
Dense: F.linear -> GELU (tanh form, as the sparse kernels compute it) -> F.linear, eager and
torch.compile, the faster as 1.00x. Every variant is gated against the float32 block on the masked
weights before it is timed; CUDA-graph replays on both sides.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import torch.nn.functional as F

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), _ROOT, os.path.join(_ROOT, "src")]

import tm_build  # noqa: E402
import tm_pack  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402
from tm_build import Variant  # noqa: E402
from tm_pack import VEC  # noqa: E402

PAIRS = [  # (fc1 variant, fc2 variant)
    (Variant("tm", 256, 2, out="group", gelu=True), Variant("tm", 256, 2, out="permute")),
    (Variant("tm", 256, 3, straddle=True, out="group", gelu=True), Variant("tm", 256, 3, straddle=True, out="permute")),
    (Variant("cluster", 256, 2, cl=2, out="group", gelu=True), Variant("cluster", 256, 2, cl=2, out="permute")),
    (Variant("cluster", 256, 3, cl=2, straddle=True, out="group", gelu=True),
     Variant("cluster", 256, 3, cl=2, straddle=True, out="permute")),
    (Variant("cluster", 256, 2, cl=2, out="group", gelu=True), Variant("cluster", 256, 2, cl=2)),
]
CASES = [(4096, 16384), (4096, 11008)]  # (model dim, hidden)
DEVICE = "cuda"  # tm_mma.py --dry-run sets "cpu"


def fold_columns(w2: torch.Tensor, mask2: torch.Tensor, perm2: torch.Tensor, perm1: torch.Tensor, width: int):
    """fc2's packed weight over fc1's group-order features: column p is W2[:, perm1[p]] (p < hidden),
    zero for fc1's padding positions. Relabelling columns keeps fc2's row groups and its sparsity."""
    hidden = perm1.numel()
    w2g = w2.new_zeros(w2.shape[0], width)
    m2g = torch.zeros(w2.shape[0], width, dtype=torch.bool, device=w2.device)
    w2g[:, :hidden] = w2[:, perm1.long()]
    m2g[:, :hidden] = mask2[:, perm1.long()]
    return ShflBWMatrix.from_dense(w2g, m2g, perm2, vector=VEC)


def block(gen, d, hidden, sparsity, device):
    w1 = (torch.randn(hidden, d, generator=gen) * 0.02).to(torch.bfloat16).to(device)
    w2 = (torch.randn(d, hidden, generator=gen) * 0.02).to(torch.bfloat16).to(device)
    m1, p1 = random_shflbw_mask(hidden, d, VEC, 1 - sparsity, generator=gen)
    m2, p2 = random_shflbw_mask(d, hidden, VEC, 1 - sparsity, generator=gen)
    m1, p1, m2, p2 = m1.to(device), p1.to(device), m2.to(device), p2.to(device)
    b1 = torch.randn(hidden, generator=gen).to(torch.bfloat16).to(device)
    b2 = torch.randn(d, generator=gen).to(torch.bfloat16).to(device)
    packed1 = ShflBWMatrix.from_dense(w1, m1, p1, vector=VEC)
    packed2 = fold_columns(w2, m2, p2, p1, packed1.num_groups * VEC)
    return w1, w2, m1, m2, b1, b2, packed1, packed2


def reference(x, w1, w2, b1, b2):
    return F.linear(F.gelu(F.linear(x.float(), w1.float(), b1.float()), approximate="tanh"), w2.float(), b2.float())


def run_emulate() -> int:
    """The fold on CPU: fc1 in group order (tm_pack.emulate's math), fc2 on it, against the block."""
    gen = torch.Generator().manual_seed(3)
    d, hidden, t = 96, 200, 5
    w1, w2, m1, m2, b1, b2, packed1, packed2 = block(gen, d, hidden, 0.75, "cpu")
    x = torch.randn(t, d, generator=gen).to(torch.bfloat16)
    h = F.gelu(F.linear(x.float(), (w1.float() * m1), b1.float()), approximate="tanh")  # original order
    h_g = torch.zeros(t, packed1.num_groups * VEC)
    h_g[:, :hidden] = h[:, packed1.perm.long()]  # fc1's group order, zeros on padding rows
    p2 = tm_pack.prepare(packed2, 64, "quads", straddle=True)
    got = tm_pack.emulate(p2, h_g, b2.float())
    ref = reference(x, w1 * m1, w2 * m2, b1, b2)
    err = ((got - ref).norm() / ref.norm()).item()
    print(f"fold: fc2 over fc1's group order, rel err {err:.2e}")
    return 0 if err < 1e-5 else 1


def run_gpu(out_path: str, tokens: list[int], sparsities: list[float]) -> int:
    from benchmarks.run_linear import stamp
    from benchmarks.timing import median_us, rel_error
    from tm_mma import record

    kernels = {}
    for v in {v for pair in PAIRS for v in pair}:
        try:
            kernels[v] = tm_build.compile_variant(v)
        except Exception as e:  # noqa: BLE001 - a variant that does not build is reported, the others run
            print(f"variant {v.name} did not build: {type(e).__name__}: {str(e)[:2000]}", flush=True)
    permute = tm_build.compile_permute()
    dense_c = torch.compile(lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2))
    result = {"stamp": stamp(), "rows": []}
    for (d, hidden), t, s in itertools.product(CASES, tokens, sparsities):
        gen = torch.Generator().manual_seed(0)
        w1, w2, m1, m2, b1, b2, packed1, packed2 = block(gen, d, hidden, s, DEVICE)
        x = torch.randn(t, d, device=DEVICE, dtype=torch.bfloat16)
        ref = reference(x, w1 * m1, w2 * m2, b1, b2)
        ref_dense = reference(x, w1, w2, b1, b2)
        case = f"D{d}-H{hidden}-T{t}-s{s}"
        rows = []
        for name, fn in (("dense-eager", lambda: F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)),
                         ("dense-compiled", lambda: dense_c(x, w1, b1, w2, b2))):
            err = rel_error(fn(), ref_dense)
            rows.append((name, median_us(fn, graph=True) if err < 2e-2 else None, err))
        width1 = packed1.num_groups * VEC
        inv2 = torch.empty(d, dtype=torch.int32, device=DEVICE)
        inv2[packed2.perm.long()] = torch.arange(d, dtype=torch.int32, device=DEVICE)
        for v1, v2 in PAIRS:
            if v1 not in kernels or v2 not in kernels:
                continue
            pk1 = tm_pack.prepare(packed1, v1.kc, v1.order, v1.straddle)
            pk2 = tm_pack.prepare(packed2, v2.kc, v2.order, v2.straddle)
            h_g = torch.full((t, width1), float("nan"), device=DEVICE, dtype=torch.bfloat16)
            y = torch.full((t, d), float("nan"), device=DEVICE, dtype=torch.bfloat16)
            y_g = torch.empty(t, packed2.num_groups * VEC, device=DEVICE, dtype=torch.bfloat16)

            def run(v1=v1, v2=v2, pk1=pk1, pk2=pk2, h_g=h_g, y=y, y_g=y_g):
                tm_build.launch(v1, kernels[v1], pk1, x, b1, h_g)
                if v2.out == "permute":
                    return tm_build.permute_cols(permute, tm_build.launch(v2, kernels[v2], pk2, h_g, b2, y_g), inv2, y)
                return tm_build.launch(v2, kernels[v2], pk2, h_g, b2, y)

            err = rel_error(run(), ref)
            rows.append((f"{v1.name} + {v2.name}", median_us(run, graph=True) if err < 2e-2 else None, err))
            del pk1, pk2, h_g, y, y_g, run
        record(result, case, rows, min(us for _, us, _ in rows[:2] if us), out_path, width=72)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tm_mlp.json")
    ap.add_argument("--tokens", default="4096,2048")
    ap.add_argument("--sparsities", default="0.75,0.875")
    ap.add_argument("--emulate", action="store_true")
    a = ap.parse_args()
    sys.exit(run_emulate() if a.emulate else run_gpu(a.out, [int(t) for t in a.tokens.split(",")],
                                                       [float(s) for s in a.sparsities.split(",")]))
