"""``shflbw.conv2d``: F.conv2d (groups = 1) on a packed Shfl-BW weight (Cout x Cin*R*S).

The reference unfolds x and gathers the kept (c, r, s) rows per group; it is the CPU
implementation and, for now, the GPU one too (TODO(#6): Triton implicit-GEMM kernels).
NCHW in, NCHW out; channels_last in, channels_last out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shflbw.format.matrix import ShflBWMatrix
from shflbw.ops import reference


@torch.library.custom_op("shflbw::conv2d", mutates_args=())
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
    return reference.conv2d_ref(x, values, col_idx, group_ptr, perm, bias, out_channels, kernel, stride, padding, dilation)


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


def conv2d(x: torch.Tensor, w: ShflBWMatrix, bias: torch.Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, W, bias, stride, padding, dilation)`` for a W packed from a Conv2d weight."""
    if not isinstance(w, ShflBWMatrix):
        raise TypeError(f"w must be a shflbw.ShflBWMatrix, got {type(w).__name__}")
    if w.kernel is None:
        raise ValueError("w was not packed from a 4-D Conv2d weight (it has no kernel shape)")
    if groups != 1:
        raise ValueError(f"shflbw.conv2d supports groups=1 only, got groups={groups}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    cin, r, s = w.kernel
    if x.shape[1] != cin:
        raise ValueError(f"x has {x.shape[1]} channels but the weight expects {cin}")
    if x.dtype != w.dtype:
        raise TypeError(f"x dtype {x.dtype} does not match the weight dtype {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device} but the weight is on {w.device}")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"stride and dilation must be >= 1, got {stride} and {dilation}")
    padding, prepad = resolve_padding(padding, (r, s), dilation, stride)
    if prepad is not None:
        x = F.pad(x, prepad)
    m = w.shape[0]
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (m,):
            raise ValueError(f"bias must be a tensor of shape ({m},)")
        bias = bias.to(x.dtype)
    return conv2d_op(x, w.values, w.col_idx, w.group_ptr, w.perm, bias, m, list(w.kernel), stride, padding, dilation)
