"""Per-layer sparsity under one overall budget, chosen from each layer's refit error on calibration data.

A uniform sparsity treats every layer alike, but layers differ in how much of their output the
kept weights can reproduce once refit. ``allocate_sparsity`` measures, for every selected layer and
a few sparsity levels around the target, the relative output error the one-shot refit leaves on
the *dense* model's calibration inputs,

    e(s) = mean over output features i of ||X (w_i - w_s,i)||^2 / ||(X - mean X) w_i||^2

(w_s,i: row i of the refit kept weights at sparsity s): each output feature's error against its
own variation, so that a few outlier features with most of the output's energy (MiniLM's FFN
outputs: fc2 loses 0.004 of its whole output energy at 75 %, session 14) do not make a layer look
free to prune, and a constant offset, which carries nothing, does not count as signal.

It then spends the budget greedily: every layer starts at its lowest level, and the layer whose next
level adds the least error per weight removed steps up, until the weights removed reach the target
fraction of all selected weights (never fewer; it may overshoot by one step of one layer). Layers
count equally: a relative error of 0.1 in a 384 x 384 attention projection is charged as much as
one in a 1536 x 384 feed-forward layer, which is the assumption this makes.

The result is a sparsity per layer; ``config_with`` turns it into per-layer overrides of a
``ShflBWConfig``, which ``oneshot_prune_`` (or any other path) then uses. Cost: one calibration pass per stage of layers
sharing an input, and one Shfl-BW search (alternation only) plus one refit per layer and level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch
from torch import nn

from shflbw.config import LayerOverride, ShflBWConfig
from shflbw.prune import prune
from shflbw.recover.group_obs import damped_inverse
from shflbw.recover.reconstruct import _input_statistics, _rowwise_lstsq, calibration_stages, reconstruct_group_lstsq

# Levels tried around the target: steps of 1/16 of the weights, up to three each way.
STEPS = (-3, -2, -1, 0, 1, 2, 3)
STEP = 1 / 16
PATTERNS = ("shfl_bw", "vector", "unstructured", "block")


def obs_importance(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """OBS saliency w^2 / [H^-1]_jj (float32), the score the allocation prunes by."""
    return ((weight.detach().double() ** 2) / damped_inverse(hessian, damp).diagonal()[None, :]).float()


def refit_error(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, vector: int, pattern: str = "shfl_bw",
                damp: float = 0.01, mean: torch.Tensor | None = None, importance: torch.Tensor | None = None) -> float:
    """The output error of the layer pruned to ``sparsity`` (OBS scores) and refit by least squares,
    relative to the output's variation, on inputs with second moment ``hessian`` (H = X^T X / n) and
    mean ``mean`` (default zero). ``importance``: ``obs_importance(weight, hessian, damp)`` when the
    caller already has it (one K x K inverse per layer, not per level)."""
    w = weight.detach().double()
    h = hessian.double()
    if sparsity == 0:
        return 0.0
    if importance is None:
        importance = obs_importance(weight, h, damp)
    r = prune(weight, sparsity, vector, pattern, importance=importance, refine=False, time_budget=None)
    mask = r.mask.to(w.device)
    if pattern in ("shfl_bw", "vector"):
        new = reconstruct_group_lstsq(w, mask, r.perm.to(w.device), vector, h, damp)
    else:
        new = _rowwise_lstsq(w, mask, h, damp)
    return relative_error(new, w, h, mean)


def relative_error(new: torch.Tensor, weight: torch.Tensor, hessian: torch.Tensor, mean: torch.Tensor | None = None) -> float:
    """Mean over output features of ||X (w_i - new_i)||^2 / ||(X - mean X) w_i||^2, from H = X^T X / n
    and the mean input (module docstring)."""
    w = weight.double()
    h = hessian.double()
    d = new.double() - w
    centred = h if mean is None else h - torch.outer(mean.double(), mean.double())
    err = torch.einsum("ik,kl,il->i", d, h, d)
    var = torch.einsum("ik,kl,il->i", w, centred, w)
    var = var.clamp_min(1e-6 * float(var.mean()) + 1e-300)  # a dead feature's ratio stays finite
    return float((err / var).mean())


def levels_around(target: float) -> list[float]:
    """The sparsities tried for a target: target + k/16 for k in STEPS, inside [0, 0.97]."""
    return sorted({round(min(max(target + k * STEP, 0.0), 0.97), 6) for k in STEPS})


def spend_budget(errors: dict[str, dict[float, float]], sizes: dict[str, int], target: float) -> dict[str, float]:
    """Greedy allocation: every layer at its lowest level, then the cheapest step (error added per
    weight removed) until the removed weights reach ``target`` of all of them."""
    if not errors:
        raise ValueError("no layers to allocate")
    levels = {n: sorted(e) for n, e in errors.items()}
    at = {n: 0 for n in errors}  # index of each layer's level in levels[n]
    total = sum(sizes.values())
    removed = sum(sizes[n] * levels[n][0] for n in errors)
    while removed < target * total - 1e-9:
        best, best_cost, best_removes = None, None, 0.0
        for n, e in errors.items():
            if at[n] + 1 == len(levels[n]):
                continue
            s, nxt = levels[n][at[n]], levels[n][at[n] + 1]
            removes = sizes[n] * (nxt - s)  # weights this step removes
            cost = (e[nxt] - e[s]) / removes
            if best_cost is None or cost < best_cost or (cost == best_cost and n < best):
                best, best_cost, best_removes = n, cost, removes
        if best is None:
            raise ValueError(f"the levels tried cannot reach sparsity {target}")
        removed += best_removes
        at[best] += 1
    return {n: levels[n][at[n]] for n in errors}


@torch.no_grad()
def allocate_sparsity(
    model: nn.Module,
    config: ShflBWConfig,
    calibration: Iterable,
    run: Callable | None = None,
    pattern: str = "shfl_bw",
    damp: float = 0.01,
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, dict[float, float]]]:
    """(sparsity per layer, the measured error curves) for ``config.sparsity`` overall on the layers
    ``config`` selects; V per layer from ``config``. No weight or mask changes (Hugging Face Conv1D
    layers do become their equivalent nn.Linear: nn/hf_conv1d.py)."""
    if pattern not in PATTERNS:
        raise ValueError(f"allocate_sparsity supports the patterns {PATTERNS}, got {pattern!r} (N:M fixes its own)")
    run, batches, layers, stages = calibration_stages(model, config, calibration, run, progress,
                                                      "shflbw: sparsity allocation")
    errors: dict[str, dict[float, float]] = {}
    for stage in stages:
        hs, _, means = _input_statistics(model, None, batches, stage, run)
        for name in stage:
            _, vector = config.for_layer(name)
            w = layers[name].weight
            importance = obs_importance(w, hs[name], damp)
            errors[name] = {s: refit_error(w, hs[name], s, vector, pattern, damp, means[name][0], importance)
                            for s in levels_around(config.sparsity)}
    sizes = {n: layers[n].weight.numel() for n in errors}
    return spend_budget(errors, sizes, config.sparsity), errors


def config_with(config: ShflBWConfig, sparsities: dict[str, float]) -> ShflBWConfig:
    """``config`` with one exact-name override per layer of ``sparsities`` (added after its own, so they win)."""
    overrides = dict(config.overrides)
    for name, s in sparsities.items():
        overrides.pop(name, None)  # re-inserted last, after any pattern that also matches it
        overrides[name] = LayerOverride(sparsity=s, vector=config.for_layer(name)[1])
    return dataclasses.replace(config, overrides=overrides)
