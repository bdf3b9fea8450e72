"""``shflbw.conv2d``: F.conv2d (groups = 1) on a packed Shfl-BW weight (Cout x Cin*R*S).

The reference unfolds x and gathers the kept (c, r, s) rows per group (any device). The Triton
path (CUDA, or the interpreter) is an implicit GEMM on the batch-innermost layout (C, H, W, N):
``conv2d`` converts to it and back around the kernel (two permute copies, counted in its time);
``conv2d_chwn`` takes and returns that layout, for runs of layers that stay in it.
NCHW in, NCHW out; channels_last in, channels_last out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shflbw.format.matrix import ShflBWMatrix
from shflbw.ops import reference
from shflbw.ops.dispatch import eager_op, use_triton


@eager_op("shflbw::conv2d")
def conv2d_op(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_channels: int,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    fmt = torch.channels_last if reference.is_channels_last(x) else torch.contiguous_format
    if use_triton(x, values.shape[1]):
        from shflbw.kernels.conv2d import conv2d_chwn
        from shflbw.kernels.layout import from_chwn, to_chwn

        y = conv2d_chwn(to_chwn(x), values, col_idx, group_ptr, perm, bias, out_channels, tuple(kernel), tuple(stride),
                        tuple(padding), tuple(dilation))
        return from_chwn(y, fmt)
    return reference.conv2d_ref(x, values, col_idx, group_ptr, perm, bias, out_channels, kernel, stride, padding, dilation)


@eager_op("shflbw::conv2d_chwn")
def conv2d_chwn_op(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_channels: int,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    relu: bool,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    if use_triton(x, values.shape[1]):
        from shflbw.kernels.conv2d import conv2d_chwn

        return conv2d_chwn(x, values, col_idx, group_ptr, perm, bias, out_channels, tuple(kernel), tuple(stride),
                           tuple(padding), tuple(dilation), relu=relu, residual=residual)
    y = reference.conv2d_ref(x.permute(3, 0, 1, 2), values, col_idx, group_ptr, perm, bias, out_channels, kernel,
                             stride, padding, dilation)
    if residual is not None:
        y = y + residual.permute(3, 0, 1, 2)
    if relu:
        y = torch.relu(y)
    return y.permute(1, 2, 3, 0).contiguous()


@conv2d_chwn_op.register_fake
def _(x, values, col_idx, group_ptr, perm, bias, out_channels, kernel, stride, padding, dilation, relu, residual=None):
    ho, wo = reference.conv_out_size(x.shape[1], x.shape[2], kernel, stride, padding, dilation)
    return x.new_empty(out_channels, ho, wo, x.shape[3])


@conv2d_op.register_fake
def _(x, values, col_idx, group_ptr, perm, bias, out_channels, kernel, stride, padding, dilation):
    ho, wo = reference.conv_out_size(x.shape[2], x.shape[3], kernel, stride, padding, dilation)
    fmt = torch.channels_last if reference.is_channels_last(x) else torch.contiguous_format
    return x.new_empty(x.shape[0], out_channels, ho, wo).contiguous(memory_format=fmt)


def _pair(v, name: str) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return list(v)


def resolve_padding(padding, kernel_hw, dilation, stride) -> tuple[list[int], tuple[int, int, int, int] | None]:
    """(symmetric padding [ph, pw], extra F.pad tuple or None) for int / pair / 'same' / 'valid' padding.

    'same' with an even total (dilation * (k - 1)) pads asymmetrically, the extra row / column at
    the end as F.conv2d does; the unfold reference takes symmetric padding only, hence the F.pad.
    """
    if padding == "valid":
        return [0, 0], None
    if padding == "same":
        if list(stride) != [1, 1]:
            raise ValueError("padding='same' needs stride 1 (as in F.conv2d)")
        total = [dilation[0] * (kernel_hw[0] - 1), dilation[1] * (kernel_hw[1] - 1)]
        if total[0] % 2 or total[1] % 2:
            return [0, 0], (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
        return [total[0] // 2, total[1] // 2], None
    padding = _pair(padding, "padding")
    if min(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    return padding, None


def _check(x: torch.Tensor, w: ShflBWMatrix, groups: int) -> None:
    """x viewed as (N, C, H, W)."""
    if not isinstance(w, ShflBWMatrix):
        raise TypeError(f"w must be a shflbw.ShflBWMatrix, got {type(w).__name__}")
    if w.kernel is None:
        raise ValueError("w was not packed from a 4-D Conv2d weight (it has no kernel shape)")
    if groups != 1:
        raise ValueError(f"shflbw.conv2d supports groups=1 only, got groups={groups}")
    if x.shape[1] != w.kernel[0]:
        raise ValueError(f"x has {x.shape[1]} channels but the weight expects {w.kernel[0]}")
    if x.dtype != w.dtype:
        raise TypeError(f"x dtype {x.dtype} does not match the weight dtype {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device} but the weight is on {w.device}")


def _check_bias(bias, m: int, dtype: torch.dtype):
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor) or bias.shape != (m,):
        raise ValueError(f"bias must be a tensor of shape ({m},)")
    return bias.to(dtype)


def conv2d(x: torch.Tensor, w: ShflBWMatrix, bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, W, bias, stride, padding, dilation)`` for a W packed from a Conv2d weight."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    _check(x, w, groups)
    cin, r, s = w.kernel
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"stride and dilation must be >= 1, got {stride} and {dilation}")
    padding, prepad = resolve_padding(padding, (r, s), dilation, stride)
    if prepad is not None:
        x = F.pad(x, prepad)
    m = w.shape[0]
    bias = _check_bias(bias, m, x.dtype)
    return conv2d_op(x, w.values, w.col_idx, w.group_ptr, w.perm, bias, m, list(w.kernel), stride, padding, dilation)


def conv2d_chwn(x: torch.Tensor, w: ShflBWMatrix, bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1,
                relu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The convolution on the batch-innermost layout: x (Cin, H, W, N) -> (Cout, Ho, Wo, N), ReLU optionally fused.

    ``residual`` (Cout, Ho, Wo, N), e.g. a residual block's shortcut, is added before the ReLU in the
    kernel's epilogue: ``relu(conv(x) + bias + residual)`` in one pass over the output.

    For a run of layers kept in this layout (one conversion at each edge of the run):
    ``x.permute(1, 2, 3, 0).contiguous()`` enters it, ``y.permute(3, 0, 1, 2)`` leaves it.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D (C, H, W, N) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    _check(x.permute(3, 0, 1, 2), w, groups=1)
    cin, r, s = w.kernel
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"stride and dilation must be >= 1, got {stride} and {dilation}")
    padding, prepad = resolve_padding(padding, (r, s), dilation, stride)
    if prepad is not None:
        raise ValueError("conv2d_chwn takes symmetric padding only; 'same' with an even kernel extent needs conv2d")
    bias = _check_bias(bias, w.shape[0], x.dtype)
    if residual is not None:
        ho, wo = reference.conv_out_size(x.shape[1], x.shape[2], w.kernel, stride, padding, dilation)
        want = (w.shape[0], ho, wo, x.shape[3])
        if not isinstance(residual, torch.Tensor) or tuple(residual.shape) != want:
            raise ValueError(f"residual must be a tensor of shape {want}, got {getattr(residual, 'shape', residual)!r}")
        if residual.dtype != x.dtype or residual.device != x.device:
            raise TypeError(f"residual must be {x.dtype} on {x.device}, got {residual.dtype} on {residual.device}")
        residual = residual.contiguous()
    return conv2d_chwn_op(x.contiguous(), w.values, w.col_idx, w.group_ptr, w.perm, bias, w.shape[0], list(w.kernel),
                          stride, padding, dilation, bool(relu), residual)
