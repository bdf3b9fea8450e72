"""``ShflBWAddNorm``: a transformer sublayer's tail, ``LayerNorm(dense(x) + residual)``, in one op.

Hugging Face BERT-style layers end both sublayers with an "Output" module (``BertSelfOutput`` after
attention, ``BertOutput`` after the MLP): ``dense``, ``dropout``, ``LayerNorm(h + input_tensor)``.
The region replaces that module and runs ``shflbw::linear_add_layernorm`` (or, after an MLP region,
whose fc2 already ran, ``shflbw::add_layernorm``): the SpMM writes feature-major, and the add and
LayerNorm read it there, so no transpose back, and the result (a token-major shaped view of a
feature-major buffer) goes into the next layer's query / key / value and MLP without a transpose in.
An MLP region feeding such a tail hands its output over feature-major too (``feature_major_out``).

Candidates are recognised by their attributes (``dense``: a compressed ``ShflBWLinear`` or the
identity left by an MLP region; ``LayerNorm``: an affine ``nn.LayerNorm``; ``dropout``) and a class
name ending in "Output"; each is fused only if it computes the same as the module it replaces on a
small random input (reference ops). Inference only: in training mode the region runs the original
module, which ``unfuse_addnorm_regions_`` puts back.
"""

from __future__ import annotations

import torch
from torch import nn

from shflbw.nn.linear import ShflBWLinear
from shflbw.nn.convert import _set_child
from shflbw.nn.mlp import ShflBWMLP
from shflbw.nn.probe import agrees, probe_input
from shflbw.ops.addnorm import add_layernorm_op, linear_add_layernorm_op
from shflbw.ops.deferred_norm import linear_add_stats_op, normalized

class ShflBWAddNorm(nn.Module):
    """``LayerNorm(dropout(dense(h)) + input_tensor)`` of an HF "Output" module, dropout off (inference)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        dense, norm = getattr(original, "dense", None), getattr(original, "LayerNorm", None)
        if not isinstance(dense, (ShflBWLinear, nn.Identity)):
            raise ValueError("ShflBWAddNorm needs a compressed dense layer (ShflBWLinear) or an MLP region's identity")
        if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None or len(norm.normalized_shape) != 1:
            raise ValueError("ShflBWAddNorm needs an affine nn.LayerNorm over the last dimension")
        self.original = original
        # Deferred LayerNorm links (set by shflbw.nn.deferred_norm, which checks the whole layer):
        # ``defer``: return s = dense(h) + input_tensor LayerNorm-pending, not LayerNorm(s);
        # ``residual_norm_eps`` not None: input_tensor may arrive pending, normalised with it and the
        # res_ln_weight / res_ln_bias buffers (the producer's LayerNorm).
        self.defer = False
        self.residual_norm_eps: float | None = None

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        dense, norm = self.original.dense, self.original.LayerNorm
        pending = self.residual_norm_eps is not None and input_tensor.shape[-1] != norm.normalized_shape[0]
        if self.training:
            if pending:  # a producer still in eval mode handed s on
                input_tensor = normalized(input_tensor, norm.normalized_shape[0], self.residual_norm_eps,
                                          self.res_ln_weight, self.res_ln_bias)
            return self.original(hidden_states, input_tensor)
        if isinstance(dense, nn.Identity):
            if pending:
                return add_layernorm_op(hidden_states, input_tensor, norm.weight, norm.bias, norm.eps,
                                        self.res_ln_weight, self.res_ln_bias, self.residual_norm_eps)
            return add_layernorm_op(hidden_states, input_tensor, norm.weight, norm.bias, norm.eps)
        bias = None if dense.bias is None else dense.bias.to(hidden_states.dtype)
        if self.defer:
            return linear_add_stats_op(hidden_states, dense.values, dense.col_idx, dense.group_ptr, dense.perm, bias,
                                       input_tensor, dense.out_features)
        return linear_add_layernorm_op(hidden_states, dense.values, dense.col_idx, dense.group_ptr, dense.perm, bias,
                                       input_tensor, norm.weight, norm.bias, norm.eps, dense.out_features)

    def extra_repr(self) -> str:
        dense = self.original.dense
        what = "add + LayerNorm after an MLP region" if isinstance(dense, nn.Identity) else (
            f"{dense.in_features} -> {dense.out_features}, V={dense.vector}, + residual, LayerNorm")
        if self.defer:
            what += " deferred (hands on s and its statistics)"
        if self.residual_norm_eps is not None:
            what += ", residual LayerNorm finished here"
        return f"{what}, feature-major out"


def _width(original: nn.Module) -> tuple[int, int]:
    dense = original.dense
    m = original.LayerNorm.normalized_shape[0]
    return (m if isinstance(dense, nn.Identity) else dense.in_features), m


def _agrees(original: nn.Module, region: ShflBWAddNorm) -> bool:
    k, m = _width(original)
    like = original.LayerNorm.weight
    return agrees(original, region, probe_input((2, 3, k), like, seed=0), probe_input((2, 3, m), like, seed=1))


def _candidate(mod: nn.Module) -> bool:
    dense, norm = getattr(mod, "dense", None), getattr(mod, "LayerNorm", None)
    return (type(mod).__name__.endswith("Output") and isinstance(dense, (ShflBWLinear, nn.Identity))
            and isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.bias is not None
            and not norm.weight.is_meta and hasattr(mod, "dropout"))


def fuse_addnorm_regions_(model: nn.Module) -> list[str]:
    """Swap every recognised sublayer tail for a ``ShflBWAddNorm``; returns the names fused."""
    done = []
    for name, mod in list(model.named_modules()):
        if not name or not _candidate(mod):
            continue
        if isinstance(mod.dense, ShflBWLinear) and mod.dense.out_features != mod.LayerNorm.normalized_shape[0]:
            continue
        region = ShflBWAddNorm(mod)
        if not _agrees(mod, region):
            continue
        _set_child(model, name, region)
        done.append(name)
        # an MLP region feeding this tail (BERT-style: X.intermediate.dense -> X.output) hands over feature-major
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        mlp = getattr(getattr(parent, "intermediate", None), "dense", None)
        if isinstance(mod.dense, nn.Identity) and isinstance(mlp, ShflBWMLP) and name.endswith("output"):
            mlp.feature_major_out = True
    return done


def unfuse_addnorm_regions_(model: nn.Module) -> int:
    """Put every ``ShflBWAddNorm``'s original module back; returns how many."""
    regions = [(n, m) for n, m in model.named_modules() if isinstance(m, ShflBWAddNorm)]
    for name, region in regions:
        _set_child(model, name, region.original)
    for mod in model.modules():
        if isinstance(mod, ShflBWMLP):
            mod.feature_major_out = False
    return len(regions)
