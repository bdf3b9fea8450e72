"""The Shfl-BW permutation search: which rows share a group, and which columns each group keeps.

Baseline design (the simple alternating search of CONTEXT.md; TODO(#3): beat it):
1. start: sort rows by their coordinate on the first singular vector of the row-normalised
   importance, so rows with similar importance profiles land in the same group;
2. alternate until the kept importance stops improving:
   a. columns: with groups fixed, keep the best (group, column) vectors under the budget;
   b. rows: with each group's columns fixed, reassign rows greedily (largest gain first, V
      rows a group) to the group whose kept columns cover most of the row's importance.
Both steps never lower the objective for the other's fixed choice, so it converges.
"""

from __future__ import annotations

import time

import torch

from shflbw.prune.patterns import grouped_rows


def _initial_order(importance: torch.Tensor) -> torch.Tensor:
    norm = importance / importance.norm(dim=1, keepdim=True).clamp_min(1e-30)
    centered = norm - norm.mean(dim=0, keepdim=True)
    # first left singular vector by power iteration (deterministic, cheap for large M)
    v = torch.ones(importance.shape[1], dtype=importance.dtype, device=importance.device)
    u = centered @ v
    for _ in range(30):
        v = centered.t() @ u
        v = v / v.norm().clamp_min(1e-30)
        u = centered @ v
    return torch.argsort(u, stable=True)


def _regroup(importance: torch.Tensor, keep: torch.Tensor, vector: int) -> torch.Tensor:
    """Greedy capacity-constrained assignment: returns a permutation (rows in group order)."""
    m = importance.shape[0]
    g_count = keep.shape[0]
    gain = importance @ keep.to(importance.dtype).t()  # [M, G]
    capacity = torch.full((g_count,), vector, dtype=torch.int64)
    capacity[-1] = m - (g_count - 1) * vector
    order = torch.argsort(gain.flatten(), descending=True, stable=True).tolist()
    assigned = torch.full((m,), -1, dtype=torch.int64)
    members: list[list[int]] = [[] for _ in range(g_count)]
    left = m
    cap = capacity.tolist()
    for idx in order:
        r, g = divmod(idx, g_count)
        if assigned[r] >= 0 or cap[g] == 0:
            continue
        assigned[r] = g
        members[g].append(r)
        cap[g] -= 1
        left -= 1
        if left == 0:
            break
    return torch.tensor([r for grp in members for r in sorted(grp)], dtype=torch.int64)


def shfl_bw_search(
    importance: torch.Tensor,
    vector: int,
    density: float,
    balanced: bool,
    max_iters: int = 20,
    time_budget: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mask M x K in original row order, perm) maximising the kept importance."""
    imp = importance.double().cpu()
    m, k = imp.shape
    start = time.monotonic()
    perm = _initial_order(imp)
    best = (-1.0, perm, None)
    for _ in range(max_iters):
        keep = grouped_rows(imp[perm], vector, density, balanced)  # [G, K]
        rows_keep = keep.repeat_interleave(vector, dim=0)[:m]
        kept = float((imp[perm] * rows_keep).sum())
        if kept <= best[0] * (1 + 1e-9):
            break
        best = (kept, perm, keep)
        if time_budget is not None and time.monotonic() - start > time_budget:
            break
        perm = _regroup(imp, keep, vector)
    _, perm, keep = best
    mask = torch.empty(m, k, dtype=torch.bool)
    mask[perm] = keep.repeat_interleave(vector, dim=0)[:m]
    return mask, perm
