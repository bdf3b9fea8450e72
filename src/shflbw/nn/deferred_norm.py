"""Link a BERT-style layer's attention tail to its MLP so the LayerNorm between them is deferred.

ops/deferred_norm.py says what is computed and why. A layer qualifies when, after the other
regions are fused, it holds (Hugging Face names):

- ``attention.output``: a ``ShflBWAddNorm`` over a compressed dense layer (the producer);
- ``intermediate.dense``: a ``ShflBWMLP`` (fc1 reads the producer's output);
- ``output``: a ``ShflBWAddNorm`` after that MLP (its residual is the producer's output);

not a decoder (no cross-attention) and no feed-forward chunking (the pending tensor must reach both readers
untouched). Names do not prove the data flow, so the whole layer runs on a small random input
before and after linking (reference ops) and the link stays only if the outputs agree.
"""

from __future__ import annotations

from torch import nn

from shflbw.nn.addnorm import ShflBWAddNorm
from shflbw.nn.linear import ShflBWLinear
from shflbw.nn.mlp import ShflBWMLP
from shflbw.nn.probe import close_enough, probe_input, reference_outputs


def _parts(layer: nn.Module):
    """(producer, mlp, tail) of a layer that qualifies, else None."""
    producer = getattr(getattr(layer, "attention", None), "output", None)
    mlp = getattr(getattr(layer, "intermediate", None), "dense", None)
    tail = getattr(layer, "output", None)
    if not (isinstance(producer, ShflBWAddNorm) and isinstance(producer.original.dense, ShflBWLinear)
            and isinstance(mlp, ShflBWMLP) and isinstance(tail, ShflBWAddNorm)
            and isinstance(tail.original.dense, nn.Identity)):
        return None
    if (getattr(layer, "add_cross_attention", False) or getattr(layer, "is_decoder", False)
            or getattr(layer, "chunk_size_feed_forward", 0)):
        return None
    norm = producer.original.LayerNorm
    if norm.weight.is_meta or mlp.fc1.in_features != norm.normalized_shape[0] or norm.normalized_shape[0] % 2:
        return None  # an odd width would misalign the float32 statistics rows (ops/deferred_norm.py)
    return producer, mlp, tail


def _link(producer: ShflBWAddNorm, mlp: ShflBWMLP, tail: ShflBWAddNorm) -> None:
    norm = producer.original.LayerNorm
    mlp.link_norm(norm)
    tail.register_buffer("res_ln_weight", norm.weight.detach().clone(), persistent=False)
    tail.register_buffer("res_ln_bias", norm.bias.detach().clone(), persistent=False)
    tail.residual_norm_eps = float(norm.eps)
    producer.defer = True


def _unlink(producer: ShflBWAddNorm, mlp: ShflBWMLP, tail: ShflBWAddNorm) -> None:
    producer.defer = False
    mlp.unlink_norm()
    for name in ("res_ln_weight", "res_ln_bias"):
        tail._buffers.pop(name, None)
    tail.residual_norm_eps = None


def link_deferred_norms_(model: nn.Module) -> list[str]:
    """Link every qualifying layer (after the other regions are fused); returns the layer names."""
    done = []
    for name, layer in list(model.named_modules()):
        parts = _parts(layer)
        if parts is None or parts[0].defer:
            continue
        like = parts[0].original.LayerNorm.weight
        x = probe_input((2, 3, like.shape[0]), like, seed=3)
        want = reference_outputs(layer, x)
        _link(*parts)
        got = reference_outputs(layer, x)
        if want is None or got is None or not close_enough(got, want, x.dtype):
            _unlink(*parts)
            continue
        done.append(name)
    return done


def has_deferred_norms(model: nn.Module) -> bool:
    """Whether any layer of ``model`` is linked (its attention tail hands on a pending LayerNorm)."""
    return any(isinstance(m, ShflBWAddNorm) and m.defer for m in model.modules())


def unlink_deferred_norms_(model: nn.Module) -> int:
    """Undo ``link_deferred_norms_``; returns how many layers were linked."""
    n = 0
    for layer in model.modules():
        parts = _parts(layer)
        if parts is not None and parts[0].defer:
            _unlink(*parts)
            n += 1
    return n

