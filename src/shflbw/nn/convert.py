"""``compress_`` / ``decompress_``: swap masked nn.Linear layers for ShflBWLinear and back."""

from __future__ import annotations

from torch import nn

from shflbw.nn.conv2d import ShflBWConv2d
from shflbw.nn.linear import ShflBWLinear
from shflbw.nn.masked import mask_of, set_mask


def _set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at ``name``, in the training mode of the module it replaces (a new module starts
    in training mode, which inside an eval model would run the training-mode paths)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child, None)
    if isinstance(old, nn.Module):
        new.train(old.training)
    setattr(parent, child, new)


def compress_(model: nn.Module, regions: bool = True, defer_layernorm: bool = False) -> nn.Module:
    """Replace every masked nn.Linear / nn.Conv2d (see ``sparsify_``) by ShflBWLinear / ShflBWConv2d.

    ``regions=True`` then runs recognised MLP blocks (Linear -> ReLU/GELU -> Linear, both
    compressed) as one feature-major ``ShflBWMLP`` (see shflbw.nn.mlp), and stages of ResNet
    residual blocks in the (C, H, W, N) layout with batch-norm folded (``ShflBWResidualStage``, see
    shflbw.nn.cnn); those are inference-only (in training mode a stage runs its original layers).
    ``regions=False`` keeps per-layer modules (autograd through x and the packed values).
    ``defer_layernorm`` (with regions): BERT-style layers hand the attention tail's LayerNorm on to
    the MLP and the MLP tail (shflbw.nn.deferred_norm; experimental, off by default).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    masked = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and mask_of(m) is not None]
    if not masked:
        if any(isinstance(m, (ShflBWLinear, ShflBWConv2d)) for m in model.modules()):
            raise ValueError("the model is already compressed and has no masked layer left: to prune again, "
                             "shflbw.decompress_(model) first, then shflbw.sparsify_(model, config)")
        raise ValueError("no masked layer found: call shflbw.sparsify_(model, config) first")
    for name, mod in masked:
        p = mask_of(mod)
        packed_cls = ShflBWConv2d.from_conv if isinstance(mod, nn.Conv2d) else ShflBWLinear.from_linear
        _set_child(model, name, packed_cls(mod, p.mask, p.perm, p.vector))
    if regions:
        from shflbw.nn.regions import fuse_regions_

        fuse_regions_(model, defer_layernorm=defer_layernorm)
    return model


def decompress_(model: nn.Module) -> nn.Module:
    """Replace every ShflBWLinear / ShflBWConv2d by its dense layer in masked mode (mask and permutation kept)."""
    from shflbw.nn.regions import unfuse_regions_

    unfuse_regions_(model)
    packed = [(n, m) for n, m in model.named_modules() if isinstance(m, (ShflBWLinear, ShflBWConv2d))]
    for name, mod in packed:
        dense = mod.to_conv() if isinstance(mod, ShflBWConv2d) else mod.to_linear()
        w = mod.matrix()
        set_mask(dense, w.mask().reshape(dense.weight.shape), w.perm.long(), w.vector)
        _set_child(model, name, dense)
    return model


def is_masked(module: nn.Module) -> bool:
    return mask_of(module) is not None
