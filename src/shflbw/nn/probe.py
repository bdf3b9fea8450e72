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
        original.eval()
        region.eval()
        with torch.no_grad(), backend("reference"):
            want = _first(original(*inputs)).float()
            got = _first(region(*inputs)).float()
    except Exception:  # noqa: BLE001 - a module whose forward does not fit the pattern may fail in any way
        return False
    finally:
        original.train(was_training)
        region.train(was_training)
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        return False
    err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
    return err < PROBE_TOLERANCE[inputs[0].dtype]


def _first(out):
    return out[0] if isinstance(out, tuple) else out
