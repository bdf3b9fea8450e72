"""Input-feature norms from calibration data, for activation-aware importance (Wanda's score)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def collect_input_norms(model: nn.Module, batches: Iterable, modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Run ``model`` on every batch and return, per named module, ||x_j|| over all tokens seen.

    A batch is passed as ``model(**batch)`` if it is a dict, ``model(*batch)`` if a tuple/list,
    else ``model(batch)``. Hooks are removed afterwards, also on error.
    """
    sums = {name: None for name in modules}

    def hook_for(name):
        def hook(mod, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            s = (x * x).sum(dim=0)
            sums[name] = s if sums[name] is None else sums[name] + s

        return hook

    handles = [mod.register_forward_pre_hook(hook_for(name)) for name, mod in modules.items()]
    try:
        seen = 0
        for batch in batches:
            if isinstance(batch, dict):
                model(**batch)
            elif isinstance(batch, (tuple, list)):
                model(*batch)
            else:
                model(batch)
            seen += 1
        if seen == 0:
            raise ValueError("calibration data is empty")
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, s in sums.items() if s is None]
    if missing:
        raise ValueError(f"calibration never reached these layers: {missing[:5]}{'...' if len(missing) > 5 else ''}")
    return {name: s.sqrt() for name, s in sums.items()}


def activation_importance(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """(|W_ij| * ||x_j||)^2: the squared Wanda score, on the same scale as squared magnitude."""
    return (weight.detach().float().abs() * input_norm.to(weight.device)[None, :]) ** 2
