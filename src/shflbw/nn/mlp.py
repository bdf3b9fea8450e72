"""``ShflBWMLP``: a Linear -> activation -> Linear run as one feature-major region (``shflbw.mlp``).

Per layer, a token-major call pays a transpose in and a transpose out around the feature-major
kernel. Inside an MLP block the hidden activation never needs to be token-major: fc1 writes it
feature-major in group order with the bias and activation fused, fc2 reads it with its column
indices folded through fc1's permutation (BENCHMARKS.md: 1.66-1.74x of the dense block at 75 %
against 1.2-1.6x per layer). ``fuse_mlp_regions_`` finds such blocks in a compressed model and
swaps them in; ``unfuse_mlp_regions_`` restores the per-layer modules bit for bit.

Recognised patterns (both need the two layers compressed and an activation the kernel fuses:
ReLU or erf GELU):
- ``nn.Sequential(..., ShflBWLinear, act, ShflBWLinear, ...)``;
- a Hugging Face BERT-style layer: ``X.intermediate`` (``dense`` then ``intermediate_act_fn``)
  feeding ``X.output.dense``. The region replaces ``intermediate.dense``; the activation and
  ``output.dense`` become identities, so ``output`` still adds the residual and normalises.
"""

from __future__ import annotations

import torch
from torch import nn

from shflbw.format.matrix import ShflBWMatrix, group_ids
from shflbw.nn.convert import _set_child
from shflbw.nn.linear import ShflBWLinear
from shflbw.ops.deferred_norm import fold_gain
from shflbw.ops.mlp import ACTIVATIONS, PackedMLP, mlp_op


def activation_name(act) -> str | None:
    """The fused-kernel name of an activation module, or None when the kernel cannot fuse it."""
    if isinstance(act, nn.ReLU):
        return "relu"
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    # transformers' ACT2FN["gelu"]: F.gelu, erf form (its tanh forms are other classes)
    if type(act).__name__ == "GELUActivation" and not getattr(act, "use_gelu_python", False):
        return "gelu"
    return None


class ShflBWMLP(nn.Module):
    """fc2(act(fc1(x))) on packed weights, feature-major inside; inference only (no autograd).

    Holds fc1 as a ``ShflBWLinear`` and fc2 folded (its columns index fc1's group-order output).
    ``sites`` names where fc1, the activation and fc2 sat, for ``unfuse_mlp_regions_``.
    """

    def __init__(self, fc1: ShflBWLinear, act: nn.Module, fc2: ShflBWLinear, sites: tuple[str, str, str]):
        super().__init__()
        activation = activation_name(act)
        if activation is None:
            raise ValueError(f"the fused kernel supports ReLU and erf GELU, not {act!r}")
        if fc2.in_features != fc1.out_features:
            raise ValueError(f"fc2 takes {fc2.in_features} inputs but fc1 gives {fc1.out_features} outputs")
        w1, w2 = fc1.matrix(), fc2.matrix()
        block = PackedMLP(w1, w2, fc1.bias, fc2.bias, activation)
        self.fc1, self.act, self.activation, self.sites = fc1, act, activation, tuple(sites)
        # Set by a ShflBWAddNorm region that consumes this block's output (shflbw.nn.addnorm): the
        # result is then a view of its feature-major buffer, with no transpose back.
        self.feature_major_out = False
        self.out_features, self.fc2_vector = w2.shape[0], w2.vector
        self.register_buffer("values2", block.values2)
        self.register_buffer("col_idx2", block.col_idx2)
        self.register_buffer("group_ptr2", w2.group_ptr)
        self.register_buffer("perm2", w2.perm)
        self.register_buffer("bias1_grouped", block.bias1_grouped)
        self.register_buffer("bias2", block.bias2)
        # Set by link_norm (shflbw.nn.deferred_norm): x may arrive LayerNorm-pending.
        self.norm_eps: float | None = None

    def link_norm(self, norm: nn.LayerNorm) -> None:
        """Let x arrive LayerNorm-pending for ``norm`` (ops/deferred_norm.py): fc1 folded with its gain
        and shift, kept beside the plain fc1 (read once: link again after changing the weights)."""
        f = self.fc1
        values, c, bias = fold_gain(f.values, f.col_idx, f.group_ptr, self.bias1_grouped, norm.weight.detach(),
                                    norm.bias.detach())
        self.register_buffer("values1_normed", values, persistent=False)
        self.register_buffer("norm_c1", c, persistent=False)
        self.register_buffer("bias1_normed", bias, persistent=False)
        self.norm_eps = float(norm.eps)

    def unlink_norm(self) -> None:
        for name in ("values1_normed", "norm_c1", "bias1_normed"):
            self._buffers.pop(name, None)
        self.norm_eps = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fc1
        args = (self.values2, self.col_idx2, self.group_ptr2, self.perm2, self.bias2, self.out_features,
                ACTIVATIONS[self.activation], self.feature_major_out)
        if self.norm_eps is not None and x.shape[-1] != f.in_features:
            return mlp_op(x, self.values1_normed, f.col_idx, f.group_ptr, f.perm, self.bias1_normed, *args,
                          self.norm_c1, self.norm_eps)
        return mlp_op(x, f.values, f.col_idx, f.group_ptr, f.perm, self.bias1_grouped, *args)

    def fc2(self) -> ShflBWLinear:
        """fc2 in its original column order (the fold undone: the same bits as before fusing)."""
        perm1 = self.fc1.perm.long()
        cols = perm1[self.col_idx2.long()]  # group-order hidden position -> fc1 output feature
        gid = group_ids(self.group_ptr2)
        order = torch.argsort(gid * (self.fc1.out_features + 1) + cols, stable=True)
        w2 = ShflBWMatrix((self.out_features, self.fc1.out_features), self.fc2_vector, self.perm2, self.group_ptr2,
                          cols[order].to(torch.int32), self.values2[order].contiguous(), validate=False)
        return ShflBWLinear(w2, self.bias2)

    def extra_repr(self) -> str:
        deferred = ", takes a deferred LayerNorm's s" if self.norm_eps is not None else ""
        return (f"{self.fc1.in_features} -> {self.fc1.out_features} -> {self.out_features}, {self.activation}, "
                f"V={self.fc1.vector}/{self.fc2_vector}, layout=feature-major inside{deferred}")


def _get(model: nn.Module, name: str):
    parent, _, child = name.rpartition(".")
    return getattr(model.get_submodule(parent) if parent else model, child)


def _candidates(model: nn.Module) -> list[tuple[str, str, str]]:
    found = []
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(mod, nn.Sequential):
            kids = list(mod.named_children())
            i = 0
            while i + 2 < len(kids):
                (n1, a), (n2, b), (n3, c) = kids[i : i + 3]
                if isinstance(a, ShflBWLinear) and activation_name(b) and isinstance(c, ShflBWLinear):
                    found.append((prefix + n1, prefix + n2, prefix + n3))
                    i += 3
                else:
                    i += 1
        inter, out = getattr(mod, "intermediate", None), getattr(mod, "output", None)
        if (isinstance(inter, nn.Module) and type(inter).__name__.endswith("Intermediate") and isinstance(out, nn.Module)
                and isinstance(getattr(inter, "dense", None), ShflBWLinear)
                and activation_name(getattr(inter, "intermediate_act_fn", None))
                and isinstance(getattr(out, "dense", None), ShflBWLinear)):
            found.append((f"{prefix}intermediate.dense", f"{prefix}intermediate.intermediate_act_fn", f"{prefix}output.dense"))
    return found


def fuse_mlp_regions_(model: nn.Module) -> list[str]:
    """Swap every recognised compressed MLP block for a ``ShflBWMLP``; returns the fc1 sites fused."""
    done = []
    for s1, sa, s2 in _candidates(model):
        fc1, act, fc2 = _get(model, s1), _get(model, sa), _get(model, s2)
        if fc2.in_features != fc1.out_features or fc1.values.dtype != fc2.values.dtype or fc1.values.is_meta:
            continue
        region = ShflBWMLP(fc1, act, fc2, (s1, sa, s2))
        _set_child(model, s1, region)
        _set_child(model, sa, nn.Identity())
        _set_child(model, s2, nn.Identity())
        done.append(s1)
    return done


def unfuse_mlp_regions_(model: nn.Module) -> int:
    """Put every ``ShflBWMLP`` back as fc1, activation, fc2 at their sites; returns how many."""
    regions = [(n, m) for n, m in model.named_modules() if isinstance(m, ShflBWMLP)]
    for name, region in regions:
        s1, sa, s2 = region.sites
        if s1 != name:
            raise ValueError(f"region at {name!r} was built for site {s1!r}: the model was restructured")
        _set_child(model, s1, region.fc1)
        _set_child(model, sa, region.act)
        _set_child(model, s2, region.fc2())
    return len(regions)
