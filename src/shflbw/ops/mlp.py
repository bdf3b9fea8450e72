"""``shflbw.mlp``: Linear -> activation -> Linear on two packed weights, feature-major inside.

Token-major x (..., K) goes in, token-major (..., M2) comes out, as with two F.linear calls and an
activation between. Inside, on the GPU: one transpose of x, fc1 writing its hidden activations
feature-major in *group order* with bias and activation fused (no permutation applied: fc1's
permutation is folded into fc2's column indices once, by :func:`fold_hidden_permutation`), fc2
writing feature-major through its own permutation (whole rows move), one transpose back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shflbw.format.matrix import ShflBWMatrix, group_ids
from shflbw.ops import reference
from shflbw.ops.deferred_norm import normalized, split_pending, stats_rows
from shflbw.ops.dispatch import eager_op, use_triton

ACTIVATIONS = {"none": 0, "relu": 1, "gelu": 2}
ACT_FN = {0: lambda h: h, 1: F.relu, 2: F.gelu}


def fold_hidden_permutation(w1: ShflBWMatrix, w2: ShflBWMatrix) -> tuple[torch.Tensor, torch.Tensor]:
    """fc2's (col_idx, values) re-indexed into fc1's group-order hidden positions, sorted per group."""
    if w2.shape[1] != w1.shape[0]:
        raise ValueError(f"fc2 takes {w2.shape[1]} inputs but fc1 gives {w1.shape[0]} outputs")
    inv1 = torch.empty_like(w1.perm)
    inv1[w1.perm.long()] = torch.arange(w1.shape[0], dtype=inv1.dtype, device=inv1.device)
    cols = inv1[w2.col_idx.long()].long()
    gid = group_ids(torch.tensor(w2.group_ptr_host(), dtype=torch.int64, device=cols.device))
    order = torch.argsort(gid * (w1.padded_rows + 1) + cols, stable=True)  # by group, then new column
    return cols[order].to(torch.int32), w2.values[order].contiguous()


@eager_op("shflbw::mlp")
def mlp_op(
    x: torch.Tensor,
    values1: torch.Tensor,
    col_idx1: torch.Tensor,
    group_ptr1: torch.Tensor,
    perm1: torch.Tensor,
    bias1_grouped: torch.Tensor | None,
    values2: torch.Tensor,
    col_idx2_folded: torch.Tensor,
    group_ptr2: torch.Tensor,
    perm2: torch.Tensor,
    bias2: torch.Tensor | None,
    out_features: int,
    activation: int,
    feature_major_out: bool = False,
    norm_c: torch.Tensor | None = None,
    norm_eps: float = 0.0,
) -> torch.Tensor:
    """``norm_c`` given: x is LayerNorm-pending (ops/deferred_norm.py), fc1 folded with that norm's
    gain and shift (``fold_gain``: values1, bias1_grouped and norm_c = rowsum of the folded values)."""
    triton_ok = use_triton(x, values1.shape[1]) and use_triton(x, values2.shape[1])
    if norm_c is not None:
        k = x.shape[-1] - stats_rows(x.dtype)
        lead = x.shape[:-1]
        if triton_ok:
            from shflbw.kernels.configs import DECODE_MAX_TOKENS
            from shflbw.kernels.mlp import mlp_fwd

            if lead.numel() > DECODE_MAX_TOKENS:
                s, stats = split_pending(x, k)
                return mlp_fwd(s.t().reshape(*lead, k), values1, col_idx1, group_ptr1, perm1, bias1_grouped, values2,
                               col_idx2_folded, group_ptr2, perm2, bias2, out_features, activation,
                               feature_major_out=feature_major_out, norm_in=(stats, norm_c, k, norm_eps))
        # Few tokens or the reference: materialise (s - mean) rs, which the folded fc1 (W diag(gain),
        # bias + W shift) turns into fc1(LayerNorm(s)).
        x = normalized(x, k, norm_eps)
    if triton_ok:
        from shflbw.kernels.mlp import mlp_fwd

        return mlp_fwd(x, values1, col_idx1, group_ptr1, perm1, bias1_grouped, values2, col_idx2_folded, group_ptr2,
                       perm2, bias2, out_features, activation, feature_major_out=feature_major_out)
    # Reference: fc1 in group order (identity placement), activation, fc2 on folded columns.
    hidden_padded = (group_ptr1.numel() - 1) * values1.shape[1]
    ident = torch.arange(hidden_padded, dtype=perm1.dtype, device=perm1.device)
    h = reference.linear_fwd_ref(x, values1, col_idx1, group_ptr1, ident, bias1_grouped, hidden_padded)
    h = ACT_FN[activation](h.float()).to(x.dtype)
    out = reference.linear_fwd_ref(h, values2, col_idx2_folded, group_ptr2, perm2, bias2, out_features)
    return reference.feature_major_view(out) if feature_major_out else out


@mlp_op.register_fake
def _(x, values1, col_idx1, group_ptr1, perm1, bias1_grouped, values2, col_idx2_folded, group_ptr2, perm2, bias2,
      out_features, activation, feature_major_out=False, norm_c=None, norm_eps=0.0):
    out = x.new_empty(*x.shape[:-1], out_features)
    return reference.feature_major_view(out) if feature_major_out else out


class PackedMLP:
    """Two packed weights prepared once for :func:`mlp` (fc1's permutation folded into fc2)."""

    def __init__(self, w1: ShflBWMatrix, w2: ShflBWMatrix, bias1=None, bias2=None, activation: str = "gelu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if w1.device != w2.device or w1.dtype != w2.dtype:
            raise ValueError(f"fc1 and fc2 must share device and dtype, got {w1.device}/{w1.dtype} and {w2.device}/{w2.dtype}")
        for name, b, n in (("bias1", bias1, w1.shape[0]), ("bias2", bias2, w2.shape[0])):
            if b is not None and (not isinstance(b, torch.Tensor) or b.shape != (n,)):
                raise ValueError(f"{name} must be a tensor of shape ({n},)")
        self.w1, self.w2, self.activation = w1, w2, activation
        self.col_idx2, self.values2 = fold_hidden_permutation(w1, w2)
        self.bias1_grouped = None
        if bias1 is not None:
            self.bias1_grouped = torch.zeros(w1.padded_rows, dtype=w1.dtype, device=w1.device)
            self.bias1_grouped[: w1.shape[0]] = bias1.to(w1.dtype)[w1.perm.long()]
        self.bias2 = None if bias2 is None else bias2.to(w2.dtype)


def mlp(x: torch.Tensor, block: PackedMLP) -> torch.Tensor:
    """fc2(act(fc1(x))) for token-major x (..., K); both weights packed (see :class:`PackedMLP`)."""
    from shflbw.ops.linear import check_operand

    check_operand(x, block.w1, -1, "x")
    w1, w2 = block.w1, block.w2
    return mlp_op(x, w1.values, w1.col_idx, w1.group_ptr, w1.perm, block.bias1_grouped, block.values2, block.col_idx2,
                  w2.group_ptr, w2.perm, block.bias2, w2.shape[0], ACTIVATIONS[block.activation])
