"""The check every region passes before it is fused: it computes what the modules it replaces do.

Attribute names and module types do not prove what a ``forward`` computes, so each candidate region
and the original modules run on the same small random input (eval mode, no grad, the reference
ops: no kernels compiled) and the region is fused only if the outputs agree.
"""

from __future__ import annotations

import torch
from torch import nn

from shflbw.ops.dispatch import backend

# Relative error allowed between the two: folding batch-norm and adding the residual in fp32
# round differently from the original modules in bf16 / fp16.
PROBE_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 4e-2}


def probe_input(shape: tuple[int, ...], like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed random tensor of ``shape`` on ``like``'s device and dtype."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.to(like.device, like.dtype)


def agrees(original: nn.Module, region: nn.Module, *inputs: torch.Tensor) -> bool:
    """Whether ``region(*inputs)`` equals ``original(*inputs)`` within PROBE_TOLERANCE (training modes kept).

    Modules returning a tuple (Hugging Face attention: the output, then the weights) are compared on
    their first value."""
    was_training = original.training
    try:
        want = reference_outputs(original, *inputs)
        got = reference_outputs(region, *inputs)
    finally:
        # a region holds the original modules: both go back to the original's mode (a new region
        # starts in training mode, which restored last would put the originals in training mode)
        original.train(was_training)
        region.train(was_training)
    return want is not None and got is not None and close_enough(got, want, inputs[0].dtype)


def reference_outputs(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor | None:
    """``module(*inputs)`` (its first value) in float32, in eval mode with the reference ops and no
    grad, the module's training mode restored; None when its forward fails."""
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad(), backend("reference"):
            return _first(module(*inputs)).float()
    except Exception:  # noqa: BLE001 - a module whose forward does not fit the pattern may fail in any way
        return None
    finally:
        module.train(was_training)


def close_enough(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> bool:
    """Same shape, finite, and within PROBE_TOLERANCE[dtype] relative (Frobenius) error."""
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        return False
    err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    return err < PROBE_TOLERANCE[dtype]


def _first(out):
    return out[0] if isinstance(out, tuple) else out
