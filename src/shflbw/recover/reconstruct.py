"""One-shot Shfl-BW pruning with weight reconstruction, layer by layer, from calibration inputs.

For a layer y = x W^T, let X_p be its calibration inputs in the model pruned so far and X_d its
inputs in the dense model (same tokens). The refit of the kept weights that best reproduces the
*dense* model's outputs, min ||X_p,S W_new^T - X_d W^T||^2, is
    W_g[:, S] = W_g C[:, S] (H_SS + lambda I)^-1,   H = X_p^T X_p,  C = X_d^T X_p,
and since the V rows of a Shfl-BW group share one kept column set S, it is one damped
|S| x |S| solve per group (not one per row, as for unstructured masks). Layers are processed in
forward order, so each layer also corrects the error of the pruned layers before it.

With ``fit_bias`` the layer's bias is a free variable of the same least-squares problem: the refit
with an intercept is the refit above on centred statistics (H - mu_p mu_p^T, C - mu_d mu_p^T, with
mu_p, mu_d the mean pruned and dense inputs), and the bias then absorbs the mean output shift,
b' = b + W mu_d - W' mu_p. Its error on the calibration data is never above the refit without it
on the same mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from shflbw.config import ShflBWConfig
from shflbw.nn.masked import dense_weight, selected_layers, set_mask
from shflbw.prune import prune
from shflbw.recover.group_obs import damped_inverse, damping, greedy_group_obs
from shflbw.recover.regroup import regroup_for_refit


def reconstruct_group_lstsq(
    weight: torch.Tensor,
    mask: torch.Tensor,
    perm: torch.Tensor,
    vector: int,
    hessian: torch.Tensor,
    damp: float = 0.01,
    cross: torch.Tensor | None = None,
) -> torch.Tensor:
    """The refit weight (M x K, zero outside ``mask``); ``cross`` = X_d^T X_p (default: H, same inputs)."""
    w = weight.detach().double()
    h = hessian.double()
    lam = damping(h, damp)
    out = torch.zeros_like(w)
    m = w.shape[0]
    rhs_all = w @ (h if cross is None else cross.double())  # [M, K]: row i of W C
    for g in range(-(-m // vector)):
        rows = perm[g * vector : (g + 1) * vector].long()
        cols = torch.nonzero(mask[rows[0]]).flatten()
        if cols.numel() == 0:
            continue
        h_ss = h[cols][:, cols] + lam * torch.eye(cols.numel(), dtype=h.dtype, device=h.device)
        sol = torch.linalg.solve(h_ss, rhs_all[rows][:, cols].t()).t()  # [rows, |S|]
        out[rows.unsqueeze(1), cols.unsqueeze(0)] = sol
    return out.to(weight.dtype)


@torch.no_grad()
def _input_statistics(model, dense, batches, names, run) -> tuple[dict, dict, dict]:
    """Per layer: H = X_p^T X_p / n, C = X_d^T X_p / n (C only when a dense twin is given), and the
    mean inputs (mu_p, mu_d) (mu_d = mu_p without a dense twin)."""
    hs = {n: 0.0 for n in names}
    cs = {n: 0.0 for n in names}
    mp = {n: 0.0 for n in names}
    md = {n: 0.0 for n in names}
    count = 0
    captured: dict[str, torch.Tensor] = {}

    def capture(store, name):
        def hook(mod, args):
            store[name] = args[0].detach().double().reshape(-1, args[0].shape[-1])

        return hook

    dense_inputs: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_pre_hook(capture(captured, n)) for n in names]
    if dense is not None:
        handles += [dense.get_submodule(n).register_forward_pre_hook(capture(dense_inputs, n)) for n in names]
    try:
        for b in batches:
            run(model, b)
            if dense is not None:
                run(dense, b)
            for n in names:
                xp = captured[n]
                hs[n] = hs[n] + xp.t() @ xp
                mp[n] = mp[n] + xp.sum(0)
                if dense is not None:
                    cs[n] = cs[n] + dense_inputs[n].t() @ xp
                    md[n] = md[n] + dense_inputs[n].sum(0)
            count += captured[names[0]].shape[0]
    finally:
        for h in handles:
            h.remove()
    means = {n: (mp[n] / count, (md[n] if dense is not None else mp[n]) / count) for n in names}
    return {n: hs[n] / count for n in names}, ({n: cs[n] / count for n in names} if dense is not None else {}), means


def _centred(h: torch.Tensor, c: torch.Tensor | None, mu_p: torch.Tensor, mu_d: torch.Tensor):
    """The statistics of the refit with an intercept: H - mu_p mu_p^T and C - mu_d mu_p^T."""
    return h - torch.outer(mu_p, mu_p), (None if c is None else c - torch.outer(mu_d, mu_p))


def _default_run(model, batch):
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _stages(model: nn.Module, layers: dict[str, nn.Module], batch, run) -> list[list[str]]:
    """Layers in the order their forward first runs, grouped when they share one input tensor."""
    order: list[tuple[str, int]] = []

    def hook_for(name):
        def hook(mod, args):
            order.append((name, id(args[0])))

        return hook

    handles = [mod.register_forward_pre_hook(hook_for(n)) for n, mod in layers.items()]
    try:
        with torch.no_grad():
            run(model, batch)
    finally:
        for h in handles:
            h.remove()
    stages: list[list[str]] = []
    seen, last_input = set(), None
    for name, input_id in order:
        if name in seen:
            continue
        seen.add(name)
        if stages and input_id == last_input:
            stages[-1].append(name)
        else:
            stages.append([name])
        last_input = input_id
    return stages


def calibration_stages(model: nn.Module, config: ShflBWConfig, calibration: Iterable, run: Callable | None,
                       progress: bool, desc: str) -> tuple[Callable, list, dict[str, nn.Module], Iterable[list[str]]]:
    """(run, calibration batches, the layers ``config`` selects, their stages in forward order, with a
    progress bar when asked): what every layer-by-layer pass over calibration data starts from."""
    run = run or _default_run
    if isinstance(calibration, torch.Tensor) or not hasattr(calibration, "__iter__"):
        # a bare tensor would iterate over its rows, each row taken for a batch
        raise TypeError(f"calibration must be an iterable of batches (a list of tensors, a DataLoader), "
                        f"got {type(calibration).__name__}")
    batches = list(calibration)
    if not batches:
        raise ValueError("calibration data is empty")
    layers = selected_layers(model, config)
    stages = _stages(model, layers, batches[0], run)
    missing = set(layers) - {n for s in stages for n in s}
    if missing:
        raise ValueError(f"calibration never reached these layers: {sorted(missing)[:5]}")
    if progress:
        from tqdm.auto import tqdm

        return run, batches, layers, tqdm(stages, desc=desc, unit="stage")
    return run, batches, layers, stages


def oneshot_prune_(
    model: nn.Module,
    config: ShflBWConfig,
    calibration: Iterable,
    run: Callable | None = None,
    damp: float = 0.01,
    reconstruct: bool = True,
    progress: bool = True,
    pattern: str = "shfl_bw",
    target: str = "dense",
    score: str = "wanda",
    columns: str = "greedy",
    regroup: bool = True,
    fit_bias: bool = False,
) -> nn.Module:
    """Prune the selected layers in forward order: activation-aware mask, then least-squares refit.

    Afterwards the layers are in masked mode (``compress_`` packs them). ``pattern`` other than
    "shfl_bw" (for comparisons) refits row by row, which is exact too but costs one solve per row.
    ``score``: "wanda" ranks weights by (|W| ||x||)^2, "obs" by w^2 / [H^-1]_jj, "magnitude" by w^2
    (the search sees no calibration data; the refit still does: docs/recovery.md on why to try it).
    ``target="dense"`` refits toward the dense model's outputs (a dense copy of the model is kept
    while pruning); ``"layer"`` toward the layer's own dense output on the pruned inputs (SparseGPT's
    target, no copy). Memory: two K x K statistics per layer of the current stage.
    ``columns`` (Shfl-BW and vector patterns, with ``reconstruct``): "greedy" keeps the search's
    permutation and per-group column counts but re-chooses each group's columns by greedy group OBS
    (``recover.group_obs``: the column whose removal costs least after the refit so far, one at a
    time); "score" keeps the search's columns and refits them.
    ``regroup`` (Shfl-BW with greedy columns): choose the permutation again by the error the refit
    leaves (``recover.regroup``), starting from the better of the search's grouping and consecutive
    rows; False keeps the search's permutation.
    ``fit_bias`` (layers with a bias, with ``reconstruct``): the bias joins the refit as an intercept,
    so the mask choice, the refit and the bias minimise one error (module docstring).
    """
    if columns not in ("greedy", "score"):
        raise ValueError(f"columns must be 'greedy' or 'score', got {columns!r}")
    if target not in ("dense", "layer"):
        raise ValueError(f"target must be 'dense' or 'layer', got {target!r}")
    if score not in ("wanda", "obs", "magnitude"):
        raise ValueError(f"score must be 'wanda', 'obs' or 'magnitude', got {score!r}")
    run, batches, layers, stages = calibration_stages(model, config, calibration, run, progress, "shflbw: one-shot")
    dense = None
    if reconstruct and target == "dense":
        import copy

        dense = copy.deepcopy(model)
    for stage in stages:
        hs, cs, means = _input_statistics(model, dense, batches, stage, run)
        for name in stage:
            mod = layers[name]
            sparsity, vector = config.for_layer(name)
            w = mod.weight.detach()  # what the layer computes with (masked, if it already is)
            # Where the refit must be written: the stored weight. In masked mode mod.weight is
            # computed (weight * mask) each access, and a write into it was silently lost.
            stored = dense_weight(mod).data
            h, c = hs[name], cs.get(name)
            with_bias = fit_bias and reconstruct and mod.bias is not None
            if with_bias:
                mu_p, mu_d = means[name]
                shift = w.double() @ mu_d  # W mu_d, before the refit overwrites w in place
                h, c = _centred(h, c, mu_p, mu_d)
            hinv = None
            if score == "magnitude":
                importance = w.double() ** 2
            elif score == "wanda":
                importance = (w.double() ** 2) * hs[name].diagonal()[None, :]  # (|W| * ||x||)^2, Wanda squared
            else:  # OBS saliency w^2 / [H^-1]_jj: the output error of removing one weight alone
                hinv = damped_inverse(h, damp)  # reused by the greedy column choice below
                importance = (w.double() ** 2) / hinv.diagonal()[None, :]
            r = prune(w, sparsity, vector, pattern, importance=importance.float(), balanced=config.balanced,
                      time_budget=config.time_budget)
            mask = r.mask.to(w.device)
            perm = r.perm
            if reconstruct and columns == "greedy" and pattern in ("shfl_bw", "vector"):
                keep = mask[r.perm[::vector].long().to(w.device)].sum(1)
                if pattern == "shfl_bw" and regroup:
                    hinv = damped_inverse(h, damp) if hinv is None else hinv
                    rv = prune(w, sparsity, vector, "vector", importance=importance.float(), balanced=config.balanced)
                    keep_v = rv.mask[rv.perm[::vector].long()].sum(1).to(w.device)
                    new, mask, perm, _ = regroup_for_refit(w, h, hinv, [(r.perm, keep), (rv.perm, keep_v)], vector,
                                                           damp, c)
                else:
                    new, mask = greedy_group_obs(w, h, r.perm, vector, keep, damp, c, hinv=hinv)
                stored.copy_(new)
            elif reconstruct:
                if pattern in ("shfl_bw", "vector"):
                    new = reconstruct_group_lstsq(w, mask, r.perm, vector, h, damp, c)
                else:
                    new = _rowwise_lstsq(w, mask, h, damp, c)
                stored.copy_(new)
            if with_bias:  # b' = b + W mu_d - W' mu_p: the intercept of the centred refit
                mod.bias.data.add_((shift - stored.double() @ mu_p).to(mod.bias.dtype))
            set_mask(mod, mask, perm.to(w.device), vector)
    return model


def _rowwise_lstsq(weight, mask, hessian, damp: float, cross=None) -> torch.Tensor:
    """The refit of any mask: every row its own group (one solve per row)."""
    perm = torch.arange(weight.shape[0], device=weight.device)
    return reconstruct_group_lstsq(weight, mask, perm, 1, hessian, damp, cross)
