"""Choose each Shfl-BW group's kept columns by greedy group OBS, so the mask is chosen for the refit.

Scoring every weight once and refitting afterwards (``reconstruct_group_lstsq``) ignores that
removing one column changes what the others are worth once the rest is refit. Here each group of V
rows drops columns one at a time, always the one whose removal raises the layer's output error the
least *given the refit so far*, and refits in the same step (Optimal Brain Surgeon, applied to a
whole column of the group at once, as the V rows share it):

    cost(q)  = ||W_g[:, q]||^2 / Hinv[q, q]
    W_g     -= W_g[:, q] Hinv[q, :] / Hinv[q, q]
    Hinv    -= Hinv[:, q] Hinv[q, :] / Hinv[q, q]

with Hinv = (H + lambda I)^-1 per group. The result is exactly the damped least-squares refit of the
columns left, so no separate refit is needed. The permutation and how many columns each group keeps
come from the search (``shflbw.prune``); only which columns is re-chosen.

For the damped refit (H_SS + lambda I) w_S = (W C)_S of ``reconstruct_group_lstsq``, with C = H
for the layer's own output and C = X_d^T X_p toward the *dense* model (inputs X_p of the pruned
model, X_d of the dense one), the objective ||X_p w - X_d w0||^2 equals (w - w*)^T H (w - w*) + const with
w* = (W C) (H + lambda I)^-1 and H damped, so the elimination runs from w*.

Cost: one rank-1 update of a K x K matrix per removed column per group, batched over groups
(MiniLM's 1536-input layer at 75 %: 1152 steps over 6 groups). Memory: ``chunk_bytes`` bounds the
per-group inverses held at once.
"""

from __future__ import annotations

import torch


def damping(h: torch.Tensor, damp: float) -> float:
    """lambda = damp * mean(diag H): the ridge every refit and OBS score in shflbw.recover adds to H."""
    return damp * float(h.diagonal().mean()) + 1e-12


def damped_inverse(h: torch.Tensor, damp: float) -> torch.Tensor:
    """(H + lambda I)^-1 in float64."""
    h = h.to(torch.float64)
    return torch.linalg.inv(h + damping(h, damp) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device))


def greedy_group_obs(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    perm: torch.Tensor,
    vector: int,
    keep: torch.Tensor,
    damp: float = 0.01,
    cross: torch.Tensor | None = None,
    chunk_bytes: int = 1 << 29,
    hinv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(refit weight M x K, boolean mask M x K) with ``keep[g]`` columns kept in group g.

    ``perm`` lists the rows of group g at ``perm[g*V:(g+1)*V]`` (the last group may be short).
    ``cross`` = X_d^T X_p refits toward the dense model's outputs; None refits toward the layer's own.
    ``hinv``: ``damped_inverse(hessian, damp)`` when the caller already has it (the OBS score does).
    """
    m, k = weight.shape
    n_groups = -(-m // vector)
    if keep.numel() != n_groups:
        raise ValueError(f"keep has {keep.numel()} entries for {n_groups} groups")
    if bool((keep < 0).any()) or bool((keep > k).any()):
        raise ValueError(f"keep counts must lie in [0, {k}]")
    device = weight.device
    h = hessian.to(device=device, dtype=torch.float64)
    hinv = damped_inverse(h, damp) if hinv is None else hinv.to(device=device, dtype=torch.float64)
    w = weight.detach().to(torch.float64)
    # cross defaults to H (the layer's own output): the same damped solve as reconstruct_group_lstsq,
    # (H_SS + lambda I) w_S = (W C)_S, which shrinks kept weights slightly toward zero.
    c = h if cross is None else cross.to(device=device, dtype=torch.float64)
    target = (w @ c) @ hinv
    out = torch.zeros_like(w)
    mask = torch.zeros(m, k, dtype=torch.bool, device=device)
    per_chunk = max(1, chunk_bytes // (k * k * 8))
    perm = perm.to(device).long()
    for g0 in range(0, n_groups, per_chunk):
        groups = range(g0, min(n_groups, g0 + per_chunk))
        rows = [perm[g * vector : (g + 1) * vector] for g in groups]
        wg = torch.zeros(len(rows), vector, k, dtype=torch.float64, device=device)
        for i, r in enumerate(rows):
            wg[i, : r.numel()] = target[r]
        alive, wg = _eliminate(wg, hinv, k - keep[g0 : g0 + len(rows)].to(device))
        for i, r in enumerate(rows):
            out[r] = wg[i, : r.numel()]
            mask[r] = alive[i]
    return out.to(weight.dtype), mask


def _eliminate(wg: torch.Tensor, hinv: torch.Tensor, remove: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ``remove[b]`` columns from each group b of ``wg`` [B, V, K] greedily; (alive [B, K], wg)."""
    b, _, k = wg.shape
    hi = hinv.expand(b, k, k).clone()
    alive = torch.ones(b, k, dtype=torch.bool, device=wg.device)
    left = remove.clone().long()
    idx = torch.arange(b, device=wg.device)
    inf = torch.tensor(float("inf"), dtype=wg.dtype, device=wg.device)
    for _ in range(int(left.max().item()) if b else 0):
        d = hi.diagonal(dim1=1, dim2=2)
        cost = torch.where(alive, (wg * wg).sum(1) / d.clamp_min(1e-300), inf)
        q = cost.argmin(1)  # [B]
        active = left > 0
        dq = d[idx, q]
        coef = torch.where(active, 1.0 / dq, torch.zeros_like(dq))  # inactive groups: no update
        hq = hi[idx, q]  # [B, K], row q (= column q: hi is symmetric)
        wq = wg[idx, :, q]  # [B, V]
        scaled = (coef[:, None] * hq).unsqueeze(1)  # [B, 1, K]
        wg.baddbmm_(wq.unsqueeze(2), scaled, alpha=-1.0)  # in place: no [B, K, K] temporaries
        hi.baddbmm_(hq.unsqueeze(2), scaled, alpha=-1.0)
        alive[idx[active], q[active]] = False
        left -= active.long()
    wg = wg * alive.unsqueeze(1)  # removed columns are exact zeros (rounding leaves ~1e-17 there)
    return alive, wg
