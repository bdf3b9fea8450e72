"""Masked mode: dense weights with a fixed Shfl-BW mask applied in forward (and so to gradients).

``sparsify_`` puts the selected nn.Linear layers of a model in this mode so it can be fine-tuned
with any optimizer and loop; ``compress_`` (shflbw.nn.convert) then packs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from shflbw.config import ShflBWConfig
from shflbw.nn.hf_conv1d import is_conv1d, swap_conv1d_
from shflbw.prune import prune
from shflbw.prune.calibration import activation_importance, collect_input_norms


class ShflBWMask(nn.Module):
    """Parametrization ``weight -> weight * mask``; also carries the row permutation and V."""

    def __init__(self, mask: torch.Tensor, perm: torch.Tensor, vector: int):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))
        self.register_buffer("perm", perm.to(torch.int64))
        self.vector = vector

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)

    def extra_repr(self) -> str:
        return f"V={self.vector}, sparsity={1 - self.mask.float().mean().item():.1%}"


def mask_of(module: nn.Module) -> ShflBWMask | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, ShflBWMask):
                return p
    return None


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The unmasked weight of a (possibly masked) layer: its stored tensor, or a view of it (a
    Conv1D's transposed weight, hf_conv1d.py), so writes into it land."""
    if not parametrize.is_parametrized(module, "weight"):
        return module.weight
    w = module.parametrizations.weight.original
    for p in module.parametrizations.weight:
        if not isinstance(p, ShflBWMask):
            w = p(w)
    return w


def set_mask(module: nn.Module, mask: torch.Tensor, perm: torch.Tensor, vector: int) -> None:
    existing = mask_of(module)
    if existing is not None:
        existing.mask.copy_(mask)
        existing.perm.copy_(perm)
        existing.vector = vector
    else:
        parametrize.register_parametrization(module, "weight", ShflBWMask(mask, perm, vector))


def selected_layers(model: nn.Module, config: ShflBWConfig, filter_fn: Callable | None = None) -> dict[str, nn.Module]:
    """The prunable layers ``config`` (and ``filter_fn(module, name)``) selects, by name. Hugging Face
    Conv1D layers among them are first replaced in ``model`` by the equivalent nn.Linear (hf_conv1d.py)."""
    def wanted(mod, name):
        return (layer_type(mod) in config.layer_types and config.selects(name)
                and (filter_fn is None or filter_fn(mod, name)))

    swapped = [name for name, mod in model.named_modules() if is_conv1d(mod) and wanted(mod, name)]
    swap_conv1d_(model, swapped)  # filter_fn has judged the Conv1D: its Linear is not asked again
    chosen = {
        name: mod
        for name, mod in model.named_modules()
        if prunable(mod) and (name in swapped or wanted(mod, name))
    }
    if not chosen:
        raise ValueError(
            f"the config selects no layer (layer_types={config.layer_types}, include={config.include}, "
            f"exclude={config.exclude}); prunable layers are named like "
            f"{[f'{n} ({layer_type(m)})' for n, m in model.named_modules() if prunable(m) or is_conv1d(m)][:3]}"
        )
    return chosen


def layer_type(mod: nn.Module) -> str:
    """The config's name for a prunable module's type (ShflBWConfig.layer_types; a Hugging Face
    Conv1D is a linear layer)."""
    return "conv2d" if isinstance(mod, nn.Conv2d) else "linear"


def prunable(mod: nn.Module) -> bool:
    """nn.Linear, and nn.Conv2d with groups = 1 and zero padding (what ShflBWConv2d runs)."""
    if isinstance(mod, nn.Conv2d):
        return mod.groups == 1 and mod.padding_mode == "zeros"
    return isinstance(mod, nn.Linear)


def sparsify_(
    model: nn.Module,
    config: ShflBWConfig | None = None,
    calibration: Iterable | None = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    sparsity: float | None = None,
    progress: bool = True,
) -> nn.Module:
    """Choose Shfl-BW masks and permutations for the selected layers and put them in masked mode.

    ``calibration`` (batches the model accepts) is required for ``importance="activation"``.
    ``sparsity`` overrides the config's global sparsity (what a gradual schedule passes). Calling
    it again re-searches the masks from the current dense weights. Returns the model.
    """
    config = ShflBWConfig() if config is None else config
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, ShflBWConfig):
        raise TypeError(f"config must be a shflbw.ShflBWConfig, got {type(config).__name__} "
                        "(ShflBWConfig(**d) or ShflBWConfig.from_json(text) builds one)")
    layers = selected_layers(model, config, filter_fn)
    norms = None
    if config.importance == "activation":
        if calibration is None:
            raise ValueError('importance="activation" needs calibration batches (calibration=...)')
        norms = collect_input_norms(model, calibration, layers)
    items = layers.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="shflbw: pruning", unit="layer")
    with torch.no_grad():
        for name, mod in items:
            layer_sparsity, vector = config.for_layer(name)
            if sparsity is not None:
                layer_sparsity = sparsity
            weight = dense_weight(mod)
            flat = weight.flatten(1)  # Conv2d: Cout x Cin*R*S, the order F.unfold gathers
            importance = None
            if norms is not None:
                if isinstance(mod, nn.Conv2d):  # TODO(#6): per-(c, r, s) norms from unfolded inputs
                    raise ValueError(f"importance='activation' is not supported for Conv2d layers yet ({name})")
                importance = activation_importance(flat, norms[name])
            column_block = 1
            if config.keep_kernels and isinstance(mod, nn.Conv2d):
                column_block = mod.kernel_size[0] * mod.kernel_size[1]
            r = prune(flat, layer_sparsity, vector, importance=importance, balanced=config.balanced,
                      time_budget=config.time_budget, column_block=column_block)
            set_mask(mod, r.mask.reshape(weight.shape).to(weight.device), r.perm.to(weight.device), vector)
    return model


class CubicSparsitySchedule:
    """Gradual pruning: sparsity rises from ``initial`` to ``final`` on a cubic curve (Zhu & Gupta).

    Call ``step(model)`` once per training step; it re-searches the masks every ``every`` steps.
    """

    def __init__(self, config: ShflBWConfig, total_steps: int, every: int = 100, initial: float = 0.0,
                 calibration: Iterable | None = None):
        if not isinstance(config, ShflBWConfig):
            raise TypeError(f"config must be a shflbw.ShflBWConfig, got {type(config).__name__}")
        if total_steps <= 0 or every <= 0:
            raise ValueError("total_steps and every must be positive")
        if not 0 <= initial <= config.sparsity:
            raise ValueError(f"initial sparsity must be in [0, config.sparsity = {config.sparsity}], got {initial}")
        self.config, self.total, self.every, self.initial = config, total_steps, every, initial
        self.calibration = calibration
        self.steps = 0

    def sparsity_at(self, step: int) -> float:
        frac = min(1.0, step / self.total)
        return self.config.sparsity + (self.initial - self.config.sparsity) * (1 - frac) ** 3

    def step(self, model: nn.Module) -> float | None:
        self.steps += 1
        if self.steps % self.every and self.steps != self.total:
            return None
        s = self.sparsity_at(self.steps)
        sparsify_(model, self.config, self.calibration, sparsity=s, progress=False)
        return s
