"""``shflbw.spmm``: W @ B for a packed W and a feature-major B (K x N), the paper's own layout."""

from __future__ import annotations

import torch

from shflbw.format.matrix import ShflBWMatrix
from shflbw.ops import reference
from shflbw.ops.dispatch import eager_op, use_triton
from shflbw.ops.linear import check_operand


@eager_op("shflbw::spmm")
def spmm_op(
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    b: torch.Tensor,
    out_rows: int,
) -> torch.Tensor:
    if use_triton(b, values.shape[1]):
        from shflbw.kernels.spmm import spmm_fwd

        return spmm_fwd(values, col_idx, group_ptr, perm, b, out_rows)
    return reference.spmm_ref(values, col_idx, group_ptr, perm, b, out_rows)


@spmm_op.register_fake
def _(values, col_idx, group_ptr, perm, b, out_rows):
    return b.new_empty(out_rows, b.shape[1])


def spmm(w: ShflBWMatrix, b: torch.Tensor) -> torch.Tensor:
    """C = W @ B with B feature-major (K x N, tokens in columns); C is M x N in the original row order."""
    if isinstance(b, torch.Tensor) and b.dim() != 2:
        raise ValueError(f"b must be 2-D (K x N), got shape {tuple(b.shape)}")
    check_operand(b, w, 0, "b")
    return spmm_op(w.values, w.col_idx, w.group_ptr, w.perm, b, w.shape[0])
