"""Regroup a Shfl-BW layer's rows for the refit: the permutation chosen by the output error itself.

``shflbw.prune`` groups rows by their importance profiles (a per-weight score), then greedy group OBS
(``recover.group_obs``) chooses each group's columns for the refit. On MiniLM's calibration inputs
that grouping is a poor start for the refit: layer 2's fc1 at 75 % (V = 64) kept an output error of
0.0697 of ||X W^T||^2 under the search's permutation against 0.0535 with consecutive rows (plain
vector-wise), because the score ignores how correlated inputs let the refit make up for dropped
columns. So the permutation is chosen again with the error the refit leaves:

- With group g's kept columns S_g fixed, the refit error of row i placed in g is the OBS cost of
  removing the rest, e_i(g) = w*_Q [Hinv_QQ]^-1 w*_Q^T (Q the columns not in S_g, w* the row's
  unconstrained optimum, Hinv the damped inverse Hessian), for every row and group at once.
- Rows swap groups while a swap lowers the summed error (group sizes never change, so every group
  keeps its column count), many disjoint swaps per pass.
- Greedy group OBS then re-chooses each group's columns for its new rows; the round is kept only if
  the total error fell.

It starts from the better of the search's grouping and consecutive rows, so the result is never worse
than either, and Shfl-BW's refit error is at most vector-wise's at the same column counts. On layer 2's
fc1 (above) three rounds took the error from 0.0535 to 0.0446; its attention output projection
0.1738 -> 0.1440 (docs/recovery.md, session 11).
"""

from __future__ import annotations

import torch

from shflbw.recover.group_obs import greedy_group_obs


def refit_errors(target: torch.Tensor, hinv: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """[M, G]: the refit error of every row of ``target`` (w*, M x K) under every group's kept columns
    (``alive`` [G, K] boolean), e = w*_Q [Hinv_QQ]^-1 w*_Q^T with Q the dropped columns."""
    out = torch.zeros(target.shape[0], alive.shape[0], dtype=target.dtype, device=target.device)
    for g in range(alive.shape[0]):
        q = (~alive[g]).nonzero().flatten()
        if q.numel() == 0:
            continue
        chol = torch.linalg.cholesky(hinv[q][:, q])
        z = torch.linalg.solve_triangular(chol, target[:, q].t(), upper=False)
        out[:, g] = (z * z).sum(0)
    return out


def swap_rows(errors: torch.Tensor, group: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, int]:
    """Swap rows between groups while the summed ``errors[i, group[i]]`` falls; (new group, swaps).

    Each pass finds every row's best partner (the gain of swapping a and b is
    e[a, g_b] + e[b, g_a] - e[a, g_a] - e[b, g_b]) and applies the best swaps whose rows are disjoint:
    with the columns fixed a swap changes only its own two rows' errors, so disjoint swaps add up.
    """
    group = group.clone()
    m = group.numel()
    rows = torch.arange(m, device=group.device)
    swaps = 0
    while True:
        own = errors[rows, group]
        best_gain = torch.empty(m, dtype=errors.dtype, device=errors.device)
        best_b = torch.empty(m, dtype=torch.long, device=errors.device)
        for a0 in range(0, m, chunk):  # [chunk, M] at a time bounds memory for wide layers
            a = rows[a0 : a0 + chunk]
            gain = errors[a][:, group] + errors[:, group[a]].t() - own[a, None] - own[None, :]
            best_gain[a], best_b[a] = gain.min(1)
        scale = float(own.sum()) or 1.0
        order = torch.argsort(best_gain).tolist()
        gains, partners = best_gain.tolist(), best_b.tolist()
        used = [False] * m
        applied = 0
        for a in order:
            if gains[a] >= -1e-12 * scale:
                break
            b = partners[a]
            if used[a] or used[b]:
                continue
            used[a] = used[b] = True
            ga, gb = int(group[a]), int(group[b])
            group[a], group[b] = gb, ga
            applied += 1
        swaps += applied
        if applied == 0:
            return group, swaps


def regroup_for_refit(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    hinv: torch.Tensor,
    starts: list[tuple[torch.Tensor, torch.Tensor]],
    vector: int,
    damp: float = 0.01,
    cross: torch.Tensor | None = None,
    rounds: int = 6,
    tol: float = 5e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(refit weight, mask, perm, info) of the grouping with the least refit error.

    ``starts``: (perm, keep) pairs to begin from (``keep[g]``: columns group g keeps; ``perm`` as in
    ``greedy_group_obs``). Each round swaps rows under fixed columns (``swap_rows``), then re-chooses
    the columns (``greedy_group_obs``); it stops after ``rounds`` or when the swaps or the round lower
    the error by less than ``tol`` of it. ``info``: the error (a fraction of ||X W^T||^2 on the calibration
    inputs) of each start and after each kept round.
    """
    if not starts:
        raise ValueError("regroup_for_refit needs at least one starting grouping")
    m = weight.shape[0]
    device = weight.device
    h = hessian.to(device=device, dtype=torch.float64)
    hinv = hinv.to(device=device, dtype=torch.float64)
    w = weight.detach().to(device=device, dtype=torch.float64)
    c = h if cross is None else cross.to(device=device, dtype=torch.float64)
    target = (w @ c) @ hinv
    scale = float((w @ h * w).sum()) or 1.0
    slot_group = torch.arange(m, device=device) // vector  # group of each position of perm

    def evaluate(perm, keep):
        new, mask = greedy_group_obs(weight, hessian, perm, vector, keep, damp, cross, hinv=hinv)
        perm = perm.to(device).long()
        group = torch.empty(m, dtype=torch.long, device=device)
        group[perm] = slot_group
        errors = refit_errors(target, hinv, mask[perm[::vector]].to(device))
        total = float(errors[torch.arange(m, device=device), group].sum())
        return dict(new=new, mask=mask, perm=perm, keep=keep, group=group, errors=errors, total=total)

    tried = [evaluate(p, k) for p, k in starts]
    best = min(tried, key=lambda s: s["total"])
    info = {"starts": [s["total"] / scale for s in tried], "rounds": []}
    for _ in range(rounds):
        group, swaps = swap_rows(best["errors"], best["group"])
        swapped = float(best["errors"][torch.arange(m, device=device), group].sum())
        if swaps == 0 or (best["total"] - swapped) < tol * best["total"]:
            break  # the swaps alone gain too little to pay for re-choosing the columns
        # rows of group g fill positions g*V..: a stable sort keeps each group's rows in order
        perm = torch.argsort(group * m + torch.arange(m, device=device))
        cand = evaluate(perm, best["keep"])
        if cand["total"] >= best["total"]:
            break
        gain = (best["total"] - cand["total"]) / best["total"]
        best = cand
        info["rounds"].append(best["total"] / scale)
        if gain < tol:
            break
    return best["new"], best["mask"], best["perm"], info
