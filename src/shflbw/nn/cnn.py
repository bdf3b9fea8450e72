"""``ShflBWResidualStage``: a run of ResNet residual blocks executed in the batch-innermost layout.

The conv kernels gather whole batch runs from (C, H, W, N); per layer, ``ShflBWConv2d`` pays two
layout copies around each call (NCHW -> CHWN -> NCHW: at ResNet-50's 56^2 stage up to 1.2 ms
against a 20-60 us conv, BENCHMARKS.md). A stage region converts once on the way in and never on
the way out, and inside it:

- batch-norm is folded into the packed weights (each output row scaled, the bias shifted: the
  mask and the permutation do not change), so every conv is one kernel call;
- the ReLU after conv1 / conv2 and the block's ``relu(conv3 + shortcut)`` run in the kernels'
  epilogues (``conv2d_chwn(..., relu=True, residual=shortcut)``): no elementwise pass at all.

The region returns ``y.permute(3, 0, 1, 2)``: an NCHW-shaped view of the CHWN result. Any PyTorch
op reads it correctly (it is an ordinary strided tensor), and a following region sees its layout
and skips the conversion, so consecutive stages (torchvision's ``layer1`` .. ``layer4``) run with
one conversion for the whole body.

Recognised blocks: torchvision-style ``Bottleneck`` / ``BasicBlock``, i.e. modules with
``conv1, bn1, conv2, bn2`` (and ``conv3, bn3``), a ReLU ``relu`` and ``downsample`` None or
``Sequential(conv, BatchNorm2d)``, every conv compressed (``ShflBWConv2d``, symmetric padding).
Attribute names do not prove what ``forward`` does, so ``fuse_cnn_regions_`` runs each candidate
stage both ways on a small random input (reference ops, no kernels compiled) and fuses it only if
they agree. Inference only: in training mode the region runs the original stage it keeps
(``stage``), which ``unfuse_cnn_regions_`` puts back unchanged.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from shflbw.format.matrix import ShflBWMatrix
from shflbw.nn.conv2d import ShflBWConv2d
from shflbw.ops.dispatch import backend
from shflbw.ops.layout import to_chwn_op

# The probe that checks a stage's forward: batch 2, 8 x 8 pixels (every ResNet block keeps at
# least one pixel at stride 2). Tolerance: folding batch-norm rounds the weights again in bf16.
PROBE_SHAPE = (2, 8, 8)
PROBE_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 4e-2}


def fold_batchnorm(conv: ShflBWConv2d, bn: nn.BatchNorm2d) -> ShflBWConv2d:
    """``bn(conv(x))`` with bn's running statistics, as one packed conv (a new module; inputs untouched)."""
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
        raise ValueError("batch-norm folding needs an nn.BatchNorm2d with running statistics")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"batch-norm has {bn.num_features} channels but the conv gives {conv.out_channels}")
    w = conv.matrix()
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().float()
    shift = -bn.running_mean.float() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().float()
    bias = shift if conv.bias is None else conv.bias.float() * scale + shift
    v, m = w.vector, w.shape[0]
    n_groups = w.group_ptr.numel() - 1
    row_scale = torch.ones(n_groups * v, device=scale.device)  # padded rows past M hold zeros anyway
    row_scale[:m] = scale[w.perm.long()]
    ptr = w.group_ptr.long()
    gid = torch.repeat_interleave(torch.arange(n_groups, device=ptr.device), ptr[1:] - ptr[:-1])
    values = (w.values.float() * row_scale.view(n_groups, v)[gid]).to(w.values.dtype)
    folded = ShflBWMatrix(w.shape, v, w.perm, w.group_ptr, w.col_idx, values, kernel=w.kernel, validate=False)
    return ShflBWConv2d(folded, bias, conv.stride, conv.padding, conv.dilation)


def _block_layers(block: nn.Module) -> tuple[list[tuple[ShflBWConv2d, nn.BatchNorm2d]], tuple | None] | None:
    """([(conv, bn), ...] along the main path, (conv, bn) of the shortcut or None), or None if not a block."""
    names = ["1", "2", "3"] if hasattr(block, "conv3") else ["1", "2"]
    path = [(getattr(block, f"conv{i}", None), getattr(block, f"bn{i}", None)) for i in names]
    if not isinstance(getattr(block, "relu", None), nn.ReLU):
        return None
    ds = getattr(block, "downsample", "missing")
    if ds is None:
        shortcut = None
    elif isinstance(ds, nn.Sequential) and len(ds) == 2:
        shortcut = (ds[0], ds[1])
    else:
        return None
    for conv, bn in path + ([shortcut] if shortcut else []):
        if not isinstance(conv, ShflBWConv2d) or not isinstance(bn, nn.BatchNorm2d) or conv._prepad is not None:
            return None
        if conv.values.is_meta or bn.running_mean is None:
            return None
    return path, shortcut


class _ChwnBlock(nn.Module):
    """One residual block on CHWN tensors, batch-norm folded: relu(conv_last(...) + shortcut)."""

    def __init__(self, path: list[tuple[ShflBWConv2d, nn.BatchNorm2d]], shortcut):
        super().__init__()
        self.path = nn.ModuleList(fold_batchnorm(c, b) for c, b in path)
        self.shortcut = None if shortcut is None else fold_batchnorm(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut.forward_chwn(x)
        h = x
        for conv in self.path[:-1]:
            h = conv.forward_chwn(h, relu=True)
        return self.path[-1].forward_chwn(h, relu=True, residual=skip)


def to_chwn(x: torch.Tensor) -> torch.Tensor:
    """An NCHW-shaped tensor as contiguous (C, H, W, N): free for a region's output, else one copy."""
    xc = x.permute(1, 2, 3, 0)
    return xc if xc.is_contiguous() else to_chwn_op(x)


class ShflBWResidualStage(nn.Module):
    """An nn.Sequential of residual blocks run in (C, H, W, N) with batch-norm folded; inference only.

    It holds the original stage (for training mode, unfusing and ``save``) and the folded packed
    copies beside it, so the stage's packed weights take twice their memory while it is fused.
    Folding reads the batch-norm statistics once, here: fuse again (``unfuse_regions_`` then
    ``fuse_regions_``) after changing the weights or statistics.
    """

    def __init__(self, stage: nn.Sequential):
        super().__init__()
        parts = [_block_layers(b) for b in stage]
        if not parts or any(p is None for p in parts):
            raise ValueError("ShflBWResidualStage needs an nn.Sequential of residual blocks with every conv compressed")
        self.stage = stage  # the original modules: training mode runs them, unfusing puts them back
        self.blocks = nn.ModuleList(_ChwnBlock(*p) for p in parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.stage(x)
        h = to_chwn(x)
        for block in self.blocks:
            h = block(h)
        return h.permute(3, 0, 1, 2)

    def extra_repr(self) -> str:
        first = self.blocks[0].path[0]
        return (f"{len(self.blocks)} residual blocks, V={first.vector}, batch-norm folded, "
                f"layout=(C, H, W, N) inside, NCHW view out")


def _agrees(stage: nn.Sequential, region: ShflBWResidualStage) -> bool:
    first = region.blocks[0].path[0]
    x = torch.randn(PROBE_SHAPE[0], first.in_channels, *PROBE_SHAPE[1:], generator=torch.Generator().manual_seed(0))
    x = x.to(first.values.device, first.values.dtype)
    was_training = stage.training
    try:
        stage.eval()
        region.eval()
        with torch.no_grad(), backend("reference"):
            want = stage(x).float()
            got = region(x).float()
    except Exception:  # noqa: BLE001 - a block whose forward does not fit the pattern may fail in any way
        return False
    finally:
        stage.train(was_training)
        region.train(was_training)
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        return False
    err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    return err < PROBE_TOLERANCE[first.values.dtype]


def fuse_cnn_regions_(model: nn.Module) -> list[str]:
    """Swap every recognised stage of compressed residual blocks for a ``ShflBWResidualStage``."""
    from shflbw.nn.convert import _set_child

    done = []
    for name, mod in list(model.named_modules()):
        if not name or not isinstance(mod, nn.Sequential) or len(mod) == 0:
            continue
        if any(_block_layers(b) is None for b in mod):
            continue
        region = ShflBWResidualStage(mod)
        if not _agrees(mod, region):
            warnings.warn(f"{name}: looks like a stage of residual blocks but its forward computes something else; "
                          "left per layer", stacklevel=2)
            continue
        region.train(mod.training)
        _set_child(model, name, region)
        done.append(name)
    return done


def unfuse_cnn_regions_(model: nn.Module) -> int:
    """Put every ``ShflBWResidualStage``'s original stage back; returns how many."""
    from shflbw.nn.convert import _set_child

    regions = [(n, m) for n, m in model.named_modules() if isinstance(m, ShflBWResidualStage)]
    for name, region in regions:
        _set_child(model, name, region.stage)
    return len(regions)
