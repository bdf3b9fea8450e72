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

``ShflBWConvChain`` does the same for plain chains (VGG-style ``features``): a run of an
``nn.Sequential`` made of compressed convs, batch-norms right after them (folded), ReLUs (fused)
and max-pools (run on the CHWN tensor viewed as a channels_last (C, N, H, W) one, so the pooling
needs no layout copy either).

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
import torch.nn.functional as F
from torch import nn

from shflbw.format.matrix import ShflBWMatrix, group_ids
from shflbw.nn.conv2d import ShflBWConv2d
from shflbw.nn.convert import _set_child
from shflbw.nn.probe import agrees, probe_input
from shflbw.ops.layout import to_chwn_op

# The probe input (shflbw.nn.probe) for a candidate: batch 2; 8 x 8 pixels for a stage (every
# ResNet block keeps at least one pixel at stride 2), 32 x 32 for a chain (four 2x2 pools inside a
# VGG run).
PROBE_BATCH = 2


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
    gid = group_ids(w.group_ptr)
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


def max_pool_chwn(x: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    """F.max_pool2d on a contiguous (C, H, W, N) tensor, returned contiguous (C, Ho, Wo, N).

    (C, H, W, N) storage is a channels_last tensor of logical shape (C, N, H, W): pooling over H and
    W per (c, n) keeps that format, so neither side needs a copy."""
    y = F.max_pool2d(x.permute(0, 3, 1, 2), pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                     ceil_mode=pool.ceil_mode)
    return y.permute(0, 2, 3, 1).contiguous()


def _chain_steps(kids: list[nn.Module]) -> list[tuple[str, object]] | None:
    """[("conv", (conv, bn or None, relu)), ("pool", pool), ("relu", None)] for a run, or None."""
    steps, i = [], 0
    while i < len(kids):
        m = kids[i]
        if isinstance(m, ShflBWConv2d):
            if m._prepad is not None or m.values.is_meta:
                return None
            bn = kids[i + 1] if i + 1 < len(kids) and isinstance(kids[i + 1], nn.BatchNorm2d) else None
            if bn is not None and bn.running_mean is None:
                return None
            j = i + 1 + (bn is not None)
            relu = j < len(kids) and isinstance(kids[j], nn.ReLU)
            steps.append(("conv", (m, bn, relu)))
            i = j + relu
        elif isinstance(m, nn.MaxPool2d) and not m.return_indices:
            steps.append(("pool", m))
            i += 1
        elif isinstance(m, nn.ReLU):
            steps.append(("relu", None))
            i += 1
        else:
            return None
    return steps


class ShflBWConvChain(nn.Module):
    """A run of an nn.Sequential (compressed convs, batch-norm, ReLU, max-pool) in (C, H, W, N); inference only.

    It takes the place of the run's first module; the others become identities. ``sites`` and
    ``originals`` let ``unfuse_cnn_regions_`` put the run back.
    """

    def __init__(self, originals: list[nn.Module], sites: list[str]):
        super().__init__()
        steps = _chain_steps(originals)
        if steps is None or sum(kind == "conv" for kind, _ in steps) < 2:
            raise ValueError("ShflBWConvChain needs a run of at least two compressed convs with batch-norm, "
                             "ReLU and max-pool between them")
        self.originals = nn.ModuleList(originals)
        self.sites = tuple(sites)
        self.kinds = [kind for kind, _ in steps]
        self.relus = [bool(arg[2]) if kind == "conv" else False for kind, arg in steps]
        self.steps = nn.ModuleList(
            (fold_batchnorm(arg[0], arg[1]) if arg[1] is not None else arg[0]) if kind == "conv"
            else (arg if kind == "pool" else nn.ReLU())
            for kind, arg in steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            for m in self.originals:
                x = m(x)
            return x
        h = to_chwn(x)
        for kind, relu, step in zip(self.kinds, self.relus, self.steps):
            if kind == "conv":
                h = step.forward_chwn(h, relu=relu)
            elif kind == "pool":
                h = max_pool_chwn(h, step)
            else:
                h = torch.relu(h)
        return h.permute(3, 0, 1, 2)

    def extra_repr(self) -> str:
        convs = sum(k == "conv" for k in self.kinds)
        return f"{convs} convs, {self.kinds.count('pool')} max-pools, layout=(C, H, W, N) inside, NCHW view out"


def _chain_candidates(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(parent name, [child names]) for each maximal run of chainable children of an nn.Sequential."""
    found = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        run: list[str] = []
        for child_name, child in list(mod.named_children()) + [("", None)]:
            ok = child is not None and (isinstance(child, ShflBWConv2d) or (run and isinstance(
                child, (nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d))))
            if ok:
                run.append(child_name)
                continue
            while run and not isinstance(mod.get_submodule(run[-1]), (ShflBWConv2d, nn.BatchNorm2d, nn.ReLU)):
                run.pop()  # a run ends after its last conv (with its batch-norm / ReLU), not on a pool
            convs = sum(isinstance(mod.get_submodule(c), ShflBWConv2d) for c in run)
            if convs >= 2:
                found.append((name, list(run)))
            run = []
    return found


def _fuse_chains(model: nn.Module) -> list[str]:
    done = []
    for parent_name, children in _chain_candidates(model):
        parent = model.get_submodule(parent_name) if parent_name else model
        originals = [parent.get_submodule(c) for c in children]
        if _chain_steps(originals) is None:
            continue
        sites = [f"{parent_name}.{c}" if parent_name else c for c in children]
        region = ShflBWConvChain(originals, sites)
        first = next(m for m in originals if isinstance(m, ShflBWConv2d))
        x = probe_input((PROBE_BATCH, first.in_channels, 32, 32), first.values)
        # the probe's Sequential in the parent's mode: agrees() restores that mode to the modules it
        # wraps (the model's own), and _set_child gives the region the mode of the first of them
        if not agrees(nn.Sequential(*originals).train(parent.training), region, x):
            continue
        _set_child(model, sites[0], region)
        for site in sites[1:]:
            _set_child(model, site, nn.Identity())
        done.append(sites[0])
    return done


def fuse_cnn_regions_(model: nn.Module) -> list[str]:
    """Swap every recognised stage of compressed residual blocks for a ``ShflBWResidualStage`` and every
    run of compressed convs (with batch-norm, ReLU, max-pool) for a ``ShflBWConvChain``; returns the sites."""
    done = []
    for name, mod in list(model.named_modules()):
        if not name or not isinstance(mod, nn.Sequential) or len(mod) == 0:
            continue
        if any(_block_layers(b) is None for b in mod):
            continue
        region = ShflBWResidualStage(mod)
        first = region.blocks[0].path[0]
        if not agrees(mod, region, probe_input((PROBE_BATCH, first.in_channels, 8, 8), first.values)):
            warnings.warn(f"{name}: looks like a stage of residual blocks but its forward computes something else; "
                          "left per layer", stacklevel=2)
            continue
        _set_child(model, name, region)
        done.append(name)
    return done + _fuse_chains(model)


def unfuse_cnn_regions_(model: nn.Module) -> int:
    """Put every ``ShflBWResidualStage``'s original stage and every chain's modules back; returns how many."""
    stages = [(n, m) for n, m in model.named_modules() if isinstance(m, ShflBWResidualStage)]
    for name, region in stages:
        _set_child(model, name, region.stage)
    chains = [(n, m) for n, m in model.named_modules() if isinstance(m, ShflBWConvChain)]
    for name, chain in chains:
        if chain.sites[0] != name:
            raise ValueError(f"chain at {name!r} was built for site {chain.sites[0]!r}: the model was restructured")
        for site, original in zip(chain.sites, chain.originals):
            _set_child(model, site, original)
    return len(stages) + len(chains)
