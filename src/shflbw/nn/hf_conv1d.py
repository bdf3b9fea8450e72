"""Hugging Face's ``Conv1D`` (GPT-2, OpenAI GPT, ImageGPT, Decision Transformer): a linear layer
that stores its weight transposed, (in, out), and computes ``x @ W + b``.

``sparsify_`` (through ``selected_layers``) replaces each Conv1D the config selects with an
``nn.Linear`` whose weight is the Conv1D's own Parameter seen transposed (a parametrization), so
the masks, the packing and the kernels see only nn.Linear, and an optimizer built before
``sparsify_`` still holds, and trains, the weights the model uses. ``load`` accepts a Conv1D in the
skeleton where the checkpoint has a compressed Linear of its shape. The class is recognised by name
and attributes (nf, nx, weight (nx, nf)), so shflbw does not import transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class TransposedWeight(nn.Module):
    """Parametrization: a Conv1D's (in, out) weight as nn.Linear's (out, in), a view of it (so
    ``dense_weight(linear).copy_(...)`` writes into the Conv1D's Parameter)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.t()


def is_conv1d(mod: nn.Module) -> bool:
    w = getattr(mod, "weight", None)
    return (type(mod).__name__ == "Conv1D" and isinstance(getattr(mod, "nf", None), int)
            and isinstance(getattr(mod, "nx", None), int) and isinstance(w, torch.Tensor)
            and tuple(w.shape) == (mod.nx, mod.nf))


def conv1d_to_linear(mod: nn.Module) -> nn.Linear:
    """An nn.Linear computing what ``mod`` computes, on the same weight and bias Parameters."""
    bias = getattr(mod, "bias", None)
    with torch.device("meta"):  # no throwaway initialisation: both tensors are replaced below
        lin = nn.Linear(mod.nx, mod.nf, bias=bias is not None)
    lin.weight = mod.weight
    # unsafe: the view changes the shape. No right_inverse: registering would then rewrite the
    # Parameter's data as if it held the Linear layout.
    parametrize.register_parametrization(lin, "weight", TransposedWeight(), unsafe=True)
    if bias is not None:
        lin.bias = bias
    lin.train(mod.training)
    return lin


def swap_conv1d_(model: nn.Module, chosen: list[str]) -> None:
    """Replace the Conv1D modules named in ``chosen`` with their nn.Linear (``conv1d_to_linear``)."""
    from shflbw.nn.convert import _set_child

    for name in chosen:
        _set_child(model, name, conv1d_to_linear(model.get_submodule(name)))
