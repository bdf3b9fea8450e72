"""``shflbw.linear``: nn.functional.linear on a packed Shfl-BW weight, registered as a torch.library op.

The op works on the raw packed tensors so torch.compile and CUDA graphs see plain tensors; the
public :func:`linear` takes a :class:`ShflBWMatrix` and checks the arguments.
"""

from __future__ import annotations

import torch

from shflbw.format.matrix import ShflBWMatrix
from shflbw.ops import reference
from shflbw.ops.dispatch import eager_op, use_triton


@eager_op("shflbw::linear")
def linear_op(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
) -> torch.Tensor:
    if use_triton(x, values.shape[1]):
        from shflbw.kernels.linear import linear_fwd

        return linear_fwd(x, values, col_idx, group_ptr, perm, bias, out_features)
    return reference.linear_fwd_ref(x, values, col_idx, group_ptr, perm, bias, out_features)


@linear_op.register_fake
def _(x, values, col_idx, group_ptr, perm, bias, out_features):
    return x.new_empty(*x.shape[:-1], out_features)


@torch.library.custom_op("shflbw::linear_backward", mutates_args=())
def linear_backward_op(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    out_features: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    # TODO(#5): Triton backward kernels; the reference is correct on GPU too, only slower.
    return reference.linear_bwd_ref(grad_out, x, values, col_idx, group_ptr, perm, out_features)


@linear_backward_op.register_fake
def _(grad_out, x, values, col_idx, group_ptr, perm, out_features):
    return torch.empty_like(x), torch.empty_like(values)


def _setup_context(ctx, inputs, output):
    x, values, col_idx, group_ptr, perm, bias, out_features = inputs
    ctx.save_for_backward(x, values, col_idx, group_ptr, perm)
    ctx.out_features = out_features
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad):
    x, values, col_idx, group_ptr, perm = ctx.saved_tensors
    grad_x, grad_v = linear_backward_op(grad.contiguous(), x, values, col_idx, group_ptr, perm, ctx.out_features)
    grad_b = None
    if ctx.bias_dtype is not None and ctx.needs_input_grad[5]:
        grad_b = grad.reshape(-1, ctx.out_features).float().sum(0).to(ctx.bias_dtype)
    return (
        grad_x if ctx.needs_input_grad[0] else None,
        grad_v if ctx.needs_input_grad[1] else None,
        None,
        None,
        None,
        grad_b,
        None,
    )


linear_op.register_autograd(_backward, setup_context=_setup_context)


def check_operand(x: torch.Tensor, w: ShflBWMatrix, axis: int, what: str) -> None:
    if not isinstance(w, ShflBWMatrix):
        raise TypeError(f"w must be a shflbw.ShflBWMatrix, got {type(w).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[axis] != w.shape[1]:
        raise ValueError(f"{what} has shape {tuple(x.shape)}, but the weight {w.shape} needs size {w.shape[1]} on dim {axis}")
    if x.dtype != w.dtype:
        raise TypeError(f"{what} dtype {x.dtype} does not match the weight dtype {w.dtype}; cast one with .to()")
    if x.device != w.device:
        raise ValueError(f"{what} is on {x.device} but the weight is on {w.device}; move one with .to()")


def linear(x: torch.Tensor, w: ShflBWMatrix, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, W, bias)`` for a packed W: x is (..., K) token-major, the result (..., M)."""
    check_operand(x, w, -1, "x")
    m = w.shape[0]
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (m,):
            raise ValueError(f"bias must be a tensor of shape ({m},), got {getattr(bias, 'shape', type(bias).__name__)}")
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device} but x is on {x.device}")
        bias = bias.to(x.dtype)
    return linear_op(x, w.values, w.col_idx, w.group_ptr, w.perm, bias, m)
