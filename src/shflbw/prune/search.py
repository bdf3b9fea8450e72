"""The Shfl-BW permutation search: which rows share a group, and which columns each group keeps.

1. start: sort rows by their coordinate on the first singular vector of the row-normalised
   importance, so rows with similar importance profiles land in the same group;
2. alternate until the kept importance stops improving (the simple search of CONTEXT.md):
   a. columns: with groups fixed, keep the best (group, column) vectors under the budget;
   b. rows: with each group's columns fixed, reassign rows greedily (largest gain first, V
      rows a group) to the group whose kept columns cover most of the row's importance;
3. swap refinement, which re-chooses columns as rows move (what alternation cannot do):
   with tau the budget's threshold score (the B-th largest group-column score), the global
   top-B objective equals sum_g sum_c max(S[g, c] - tau, 0) + tau * B, where S[g, c] sums
   the importance of group g's rows in column c. Under fixed tau each group is valued on
   its own, so the exact gain of swapping two rows, columns re-chosen, costs O(K). Each sweep
   ranks every row's move gain into every group (O(M G K)), tries for each row its best
   ``targets`` groups with the ``candidates`` partners that most want to move back, applies
   improving swaps, then resets tau. It stops when a sweep does not improve the true
   objective, or at the time budget. With ``balanced=True`` every group keeps exactly the same
   number of columns, which a fixed tau ignores, so there a swap is valued exactly (the two
   groups' top-``keep`` sums before and after).

Measured on MiniLM's 36 encoder layers (squared magnitude, V = 64; docs/pruning.md): every start
tried (1-D SVD order, recursive spectral bisection, random) converges to the same plateau
after alternation; the swap refinement adds +0.004 to +0.005 kept importance; exhaustive
pairwise swaps add about +0.008 but cost 7x more time. Annealing (two forms) and a large-
neighbourhood search over pairs of groups ended within +0.004 of it, and on small instances that
can be enumerated the refinement is 0.4-0.5 % below the exact optimum on average (docs/pruning.md).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
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
    assigned = [False] * m  # a Python list: indexing a tensor per step made this loop 2.4 s of fc1's 7 s search
    members: list[list[int]] = [[] for _ in range(g_count)]
    left = m
    cap = capacity.tolist()
    for idx in order:
        r, g = divmod(idx, g_count)
        if assigned[r] or cap[g] == 0:
            continue
        assigned[r] = True
        members[g].append(r)
        cap[g] -= 1
        left -= 1
        if left == 0:
            break
    return torch.tensor([r for grp in members for r in sorted(grp)], dtype=torch.int64)


def _alternate(imp: torch.Tensor, vector: int, density: float, balanced: bool, perm: torch.Tensor, deadline: float):
    m = imp.shape[0]
    best_kept, best_perm = -1.0, perm
    for _ in range(20):
        keep = grouped_rows(imp[perm], vector, density, balanced)  # [G, K]
        kept = float((imp[perm] * keep.repeat_interleave(vector, dim=0)[:m]).sum())
        if kept <= best_kept * (1 + 1e-9):
            break
        best_kept, best_perm = kept, perm
        if time.monotonic() > deadline:
            _budget_warning("alternation", imp.shape)
            break
        perm = _regroup(imp, keep, vector)
    return best_perm


def _budget_warning(stage: str, shape) -> None:
    # A search cut by the clock keeps what it reached by then, which depends on the machine's speed
    # (seen: the same MiniLM one-shot gave Lee 0.586 and 0.578 under different CPU load).
    warnings.warn(
        f"shflbw: the {tuple(shape)} search stopped at time_budget during {stage}, before converging; "
        "its result depends on machine speed. Pass time_budget=None for a reproducible search.",
        stacklevel=3,
    )


def _budget_value(scores: torch.Tensor, density: float, balanced: bool) -> tuple[float, torch.Tensor]:
    """(true kept importance, threshold tau as a [G, 1] tensor) for group-column scores [G, K]."""
    g_count, k = scores.shape
    if balanced:
        keep = round(density * k)
        if keep == 0:
            return 0.0, torch.full((g_count, 1), float("inf"), dtype=scores.dtype)
        top = torch.topk(scores, keep, dim=1).values
        return float(top.sum()), top[:, -1:].clone()
    budget = round(density * g_count * k)
    if budget == 0:
        return 0.0, torch.full((g_count, 1), float("inf"), dtype=scores.dtype)
    top = torch.topk(scores.flatten(), budget).values
    return float(top.sum()), top[-1].expand(g_count, 1).clone()


def _top_sum(x: np.ndarray, keep: int) -> np.ndarray:
    """Sum of the ``keep`` largest entries along the last axis."""
    return np.partition(x, x.shape[-1] - keep, axis=-1)[..., x.shape[-1] - keep :].sum(axis=-1)


def _swap_refine(
    imp: torch.Tensor,
    vector: int,
    density: float,
    balanced: bool,
    perm: torch.Tensor,
    deadline: float,
    targets: int = 3,
    candidates: int = 8,
    max_sweeps: int = 30,
    progress: bool = False,
) -> torch.Tensor:
    # The per-row loop below works on K-long vectors, where a torch op costs ~6 us of dispatch on the
    # 2-core CPU against ~1 us for numpy: the same loop in torch took 8.3 of 11 s on MiniLM's fc1
    # (1536 x 384, 75 %); hence numpy here (float32, as before).
    imp_np = imp.float().numpy()
    m, k = imp_np.shape
    g_count = -(-m // vector)
    padded = np.zeros((g_count * vector, k), dtype=np.float32)
    padded[:m] = imp_np
    # groups[g] lists the rows of group g; padding rows (ids >= m) stay in the last group.
    groups = np.concatenate([perm.numpy(), np.arange(m, g_count * vector)]).reshape(g_count, vector)
    scores = padded[groups].sum(axis=1)  # [G, K]
    best, _ = _budget_value(torch.from_numpy(scores), density, balanced)
    best_groups = groups.copy()
    keep = round(density * k)  # balanced: the columns every group keeps
    if g_count < 2 or (balanced and keep == 0):
        return perm
    n_targets, n_cand = min(targets, g_count - 1), min(candidates, vector)
    rows_t = np.arange(n_targets)[:, None]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_sweeps, desc=f"swap search {m}x{k}", leave=False)
    for _ in range(max_sweeps):
        _, tau_t = _budget_value(torch.from_numpy(scores), density, balanced)
        tau = tau_t.numpy()  # [G, 1]
        base_sum = np.maximum(scores - tau, 0).sum(axis=1)  # [G]: each group's value under tau
        group_of = np.empty(g_count * vector, dtype=np.int64)
        group_of[groups.reshape(-1)] = np.repeat(np.arange(g_count), vector)
        own = group_of[:m]
        # move[r, g]: value gained by adding row r to g minus value lost by removing it from its group
        loss = base_sum[own] - np.maximum(scores[own] - imp_np - tau[own], 0).sum(axis=1)
        move = np.empty((m, g_count), dtype=np.float32)
        for i in range(0, m, 64):
            add = np.maximum(scores[None] + imp_np[i : i + 64, None, :] - tau[None], 0).sum(axis=2) - base_sum[None]
            move[i : i + 64] = add - loss[i : i + 64, None]
        move[np.arange(m), own] = -np.inf
        target = np.argsort(-move, axis=1, kind="stable")[:, :n_targets]
        threshold = 1e-9 * float(base_sum.sum())
        if balanced:
            value = _top_sum(scores, keep)  # [G]: each group's true kept importance
            threshold = 1e-9 * float(value.sum())
        swaps = 0
        for r in np.argsort(-move.max(axis=1), kind="stable").tolist():
            h = int(group_of[r])
            # every (target group, partner) pair at once: [n_targets, n_cand] candidate swaps
            tg = target[r]
            mem = groups[tg]  # [n_targets, V] rows (ids >= m are padding)
            want = np.where(mem < m, move[np.minimum(mem, m - 1), h], -np.inf)
            pick = np.argsort(-want, axis=1, kind="stable")[:, :n_cand]
            partners = mem[rows_t, pick]
            valid = (want[rows_t, pick] > -np.inf) & (tg != h)[:, None]
            diff = imp_np[r] - padded[partners]  # [n_targets, n_cand, K]
            if balanced:
                # exact: each group keeps exactly `keep` columns, so the fixed-tau value (which lets a
                # group's count float) overrates swaps; with it no balanced swap ever paid off
                gain = (_top_sum(scores[h] - diff, keep) + _top_sum(scores[tg][:, None] + diff, keep)
                        - value[h] - value[tg][:, None])
            else:
                gain = (
                    np.maximum(scores[h] - diff - tau[h], 0).sum(axis=2)
                    + np.maximum(scores[tg][:, None] + diff - tau[tg][:, None], 0).sum(axis=2)
                    - base_sum[h]
                    - base_sum[tg][:, None]
                )
            gain = np.where(valid, gain, -np.inf)
            ti, j = divmod(int(gain.argmax()), gain.shape[1])
            if not float(gain[ti, j]) > threshold:
                continue
            g, partner, diff = int(tg[ti]), int(partners[ti, j]), diff[ti, j]
            scores[h] -= diff
            scores[g] += diff
            for grp in (h, g):
                base_sum[grp] = np.maximum(scores[grp] - tau[grp], 0).sum()
                if balanced:
                    value[grp] = _top_sum(scores[grp], keep)
            groups[h][groups[h] == r] = partner
            groups[g][groups[g] == partner] = r
            group_of[r], group_of[partner] = g, h
            swaps += 1
        kept, _ = _budget_value(torch.from_numpy(scores), density, balanced)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(swaps=swaps, kept=f"{kept:.4g}")
        if kept > best * (1 + 1e-7):
            best, best_groups = kept, groups.copy()
        elif swaps == 0:
            break
        if time.monotonic() > deadline:
            _budget_warning("swap refinement", imp.shape)
            break
    if bar is not None:
        bar.close()
    out = torch.from_numpy(best_groups.reshape(-1))
    return out[out < m]


def shfl_bw_search(
    importance: torch.Tensor,
    vector: int,
    density: float,
    balanced: bool,
    time_budget: float | None = 30.0,
    refine: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mask M x K in original row order, perm) maximising the kept importance.

    ``time_budget`` (seconds, None for no limit) bounds the whole search; the best partition found
    by then is returned. ``refine=False`` stops after the alternation (the simple search).
    """
    imp = importance.double().cpu()
    m, k = imp.shape
    deadline = time.monotonic() + (time_budget if time_budget is not None else float("inf"))
    perm = _alternate(imp, vector, density, balanced, _initial_order(imp), deadline)
    if refine and 0 < density < 1:
        perm = _swap_refine(imp, vector, density, balanced, perm, deadline, progress=progress)
    keep = grouped_rows(imp[perm], vector, density, balanced)
    mask = torch.empty(m, k, dtype=torch.bool)
    mask[perm] = keep.repeat_interleave(vector, dim=0)[:m]
    return mask, perm
