"""``ShflBWSelfAttention``: a BERT-style self-attention (Q, K, V projections + softmax attention) in one op.

Hugging Face BERT-style encoders compute attention in a "SelfAttention" module: ``query``, ``key``
and ``value`` linears, a split into heads, softmax attention, and a merge back; the "SelfOutput"
tail (``ShflBWAddNorm``) then applies the output projection. With all three projections compressed,
the region runs ``shflbw::qkv_attention``: the projections write Q, K and V feature-major and the
attention kernel reads them there, so none of the three goes back to token-major for PyTorch's
attention, and the context comes out feature-major for the tail (kernels/attention.py says why).

Candidates are recognised by their attributes and a class name ending in "SelfAttention", and fused
only if they compute the same as the module they replace on a small random input (reference ops).
The region covers the encoder case: inference, no attention mask (Hugging Face passes none when no
token is padded) or a 4-D [B, 1 or H, S, S] one (boolean or additive; HF's padding masks are
boolean), no cache, no attention weights asked for. Any other call runs the original module,
which ``unfuse_attention_regions_`` puts back.
"""

from __future__ import annotations

import torch
from torch import nn

from shflbw.format.matrix import ShflBWMatrix
from shflbw.nn.convert import _set_child
from shflbw.nn.linear import ShflBWLinear
from shflbw.nn.probe import agrees, probe_input
from shflbw.ops.attention import qkv_attention_op
from shflbw.ops.dispatch import backend


class ShflBWSelfAttention(nn.Module):
    """Softmax attention over compressed ``query`` / ``key`` / ``value`` of an HF "SelfAttention" module."""

    def __init__(self, original: nn.Module, outputs: int = 2):
        super().__init__()
        q, k, v = (getattr(original, n, None) for n in ("query", "key", "value"))
        if not all(isinstance(m, ShflBWLinear) for m in (q, k, v)):
            raise ValueError("ShflBWSelfAttention needs compressed query, key and value layers (ShflBWLinear)")
        if len({(m.in_features, m.out_features) for m in (q, k, v)}) != 1:
            raise ValueError("query, key and value must have the same shape")
        heads = getattr(original, "num_attention_heads", None)
        if not isinstance(heads, int) or heads <= 0 or q.out_features % heads:
            raise ValueError(f"num_attention_heads must divide {q.out_features}, got {heads!r}")
        self.original = original
        self.heads = heads
        self.scale = float(getattr(original, "scaling", (q.out_features // heads) ** -0.5))
        self.outputs = outputs  # how many values the original returns (context first, then None for the weights)
        # Q, K and V stacked into one packed matrix, so one SpMM launch computes all three (fewer,
        # larger launches: BENCHMARKS.md, session 7). Raises ValueError where the rows do not stack
        # (out_features not a multiple of V). The three layers' values and biases become views of
        # the stacked ones (_share_views), so the weights are held once and an in-place load reaches
        # both; a .to() / .half() re-points them after converting (_apply).
        w = ShflBWMatrix.stack_rows([m.matrix() for m in (q, k, v)])
        for name, t in w.tensors().items():
            self.register_buffer("qkv_" + name, t, persistent=False)  # derived: save writes q, k, v
        bias = None
        if any(m.bias is not None for m in (q, k, v)):
            bias = torch.cat([m.bias.detach() if m.bias is not None else w.values.new_zeros(m.out_features)
                              for m in (q, k, v)])
        self.register_buffer("qkv_bias", bias, persistent=False)
        self._share_views()

    def _share_views(self) -> None:
        """Make query, key and value's values (and biases, when all three have one) slices of the
        stacked buffers."""
        layers = (self.original.query, self.original.key, self.original.value)
        start = 0
        for m in layers:
            m.values = self.qkv_values[start:start + m.values.shape[0]]
            start += m.values.shape[0]
        if self.qkv_bias is not None and all(m.bias is not None for m in layers):
            n = layers[0].out_features
            for i, m in enumerate(layers):
                m.bias = nn.Parameter(self.qkv_bias[i * n:(i + 1) * n], requires_grad=False)

    def _apply(self, fn, *args, **kwargs):
        # Module._apply converts each layer's tensors and the stacked buffers separately (a dtype
        # change copies the views apart, doubling the weights' memory): share them again
        out = super()._apply(fn, *args, **kwargs)
        self._share_views()
        return out

    def _plain(self, hidden_states: torch.Tensor, mask, args: tuple, kwargs: dict) -> bool:
        """Whether this call is the case the region computes (else the original module runs)."""
        extra = args[1:] if args else ()
        return (not self.training and hidden_states.dim() == 3 and _usable_mask(mask, hidden_states, self.heads)
                and all(a is None for a in extra)
                and kwargs.get("cache") is None and kwargs.get("past_key_values") is None
                and kwargs.get("past_key_value") is None and not kwargs.get("output_attentions")
                and kwargs.get("encoder_hidden_states") is None)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        mask = kwargs.get("attention_mask", args[0] if args else None)
        if not self._plain(hidden_states, mask, args, kwargs):
            return self.original(hidden_states, *args, **kwargs)
        bias = None if self.qkv_bias is None else self.qkv_bias.to(hidden_states.dtype)
        ctx = qkv_attention_op(hidden_states, self.qkv_values, self.qkv_col_idx, self.qkv_group_ptr, self.qkv_perm,
                               bias, mask, self.heads, self.scale, self.original.query.out_features)
        return (ctx,) + (None,) * (self.outputs - 1) if self.outputs else ctx

    def extra_repr(self) -> str:
        q = self.original.query
        return (f"{q.in_features} -> 3 x {q.out_features}, {self.heads} heads, V={q.vector}, "
                f"attention feature-major, feature-major out")


def _usable_mask(mask, x: torch.Tensor, heads: int) -> bool:
    """None, or a [B, 1 or H, S or 1, S] boolean / floating mask on x's device (what the kernel takes)."""
    if mask is None:
        return True
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.device != x.device:
        return False
    b, s = x.shape[0], x.shape[1]
    return (mask.shape[0] in (1, b) and mask.shape[1] in (1, heads) and mask.shape[2] in (1, s) and mask.shape[3] == s
            and (mask.dtype == torch.bool or mask.dtype.is_floating_point))


def _candidate(mod: nn.Module) -> bool:
    return (type(mod).__name__.endswith("SelfAttention")
            and all(isinstance(getattr(mod, n, None), ShflBWLinear) for n in ("query", "key", "value"))
            and isinstance(getattr(mod, "num_attention_heads", None), int)
            and not getattr(mod, "is_decoder", False) and not getattr(mod, "is_causal", False)
            and getattr(mod, "position_embedding_type", "absolute") == "absolute")


def _probe(original: nn.Module) -> ShflBWSelfAttention | None:
    """The region, with its output arity taken from the original, if the two agree on a probe input."""
    q = original.query
    x = probe_input((2, 5, q.in_features), q.values, seed=0)
    was = original.training
    try:
        original.eval()
        with torch.no_grad(), backend("reference"):
            out = original(x)
    except Exception:  # noqa: BLE001 - a forward that does not fit the pattern may fail in any way
        return None
    finally:
        original.train(was)
    outputs = len(out) if isinstance(out, tuple) else 0
    try:
        region = ShflBWSelfAttention(original, outputs)
    except ValueError:
        return None
    return region if agrees(original, region, x) else None


def fuse_attention_regions_(model: nn.Module) -> list[str]:
    """Swap every recognised self-attention for a ``ShflBWSelfAttention``; returns the names fused."""
    done = []
    for name, mod in list(model.named_modules()):
        if not name or not _candidate(mod):
            continue
        region = _probe(mod)
        if region is None:
            continue
        _set_child(model, name, region)
        done.append(name)
    return done


def unfuse_attention_regions_(model: nn.Module) -> int:
    """Put every ``ShflBWSelfAttention``'s original module back; returns how many."""
    regions = [(n, m) for n, m in model.named_modules() if isinstance(m, ShflBWSelfAttention)]
    for name, region in regions:
        _set_child(model, name, region.original)
    return len(regions)
