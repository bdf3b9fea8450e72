"""``ShflBWConv2d``: an nn.Conv2d (groups = 1) whose weight is a packed Shfl-BW matrix (Cout x Cin*R*S)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shflbw.format.matrix import ShflBWMatrix
from shflbw.ops.conv2d import conv2d_chwn_op, conv2d_op, resolve_padding


class ShflBWConv2d(nn.Module):
    def __init__(self, w: ShflBWMatrix, bias: torch.Tensor | None, stride, padding, dilation):
        super().__init__()
        if not isinstance(w, ShflBWMatrix) or w.kernel is None:
            raise ValueError("ShflBWConv2d needs a ShflBWMatrix packed from a 4-D Conv2d weight")
        self.out_channels = w.shape[0]
        self.in_channels, *self.kernel_size = w.kernel
        self.kernel_size = tuple(self.kernel_size)
        self.vector = w.vector
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        self.padding = padding if isinstance(padding, str) else tuple(padding)
        self._pad, self._prepad = resolve_padding(self.padding, self.kernel_size, self.dilation, self.stride)
        for name, t in w.tensors().items():
            self.register_buffer(name, t)
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(w.dtype), requires_grad=False)

    def matrix(self) -> ShflBWMatrix:
        return ShflBWMatrix((self.out_channels, self.in_channels * self.kernel_size[0] * self.kernel_size[1]), self.vector,
                            self.perm, self.group_ptr, self.col_idx, self.values,
                            kernel=(self.in_channels, *self.kernel_size), validate=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, mask: torch.Tensor, perm: torch.Tensor, vector: int) -> "ShflBWConv2d":
        from shflbw.nn.masked import dense_weight

        if conv.groups != 1:
            raise ValueError(f"ShflBWConv2d supports groups=1 only, got {conv.groups}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"ShflBWConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}")
        w = ShflBWMatrix.from_dense(dense_weight(conv).detach(), mask.reshape(conv.weight.shape), perm, vector=vector)
        return cls(w, None if conv.bias is None else conv.bias.detach(), conv.stride, conv.padding, conv.dilation)

    def to_conv(self) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation,
                         bias=self.bias is not None, device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.matrix().to_dense())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._prepad is not None:
            x = F.pad(x, self._prepad)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return conv2d_op(x, self.values, self.col_idx, self.group_ptr, self.perm, bias, self.out_channels,
                         [self.in_channels, *self.kernel_size], list(self.stride), self._pad, list(self.dilation))

    def forward_chwn(self, x: torch.Tensor, relu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The conv on the batch-innermost layout, (Cin, H, W, N) -> (Cout, Ho, Wo, N) contiguous,
        ``relu(conv(x) + bias + residual)`` in one kernel (regions: shflbw.nn.cnn). Symmetric padding only."""
        if self._prepad is not None:
            raise ValueError("forward_chwn takes symmetric padding only; 'same' with an even kernel extent needs forward")
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return conv2d_chwn_op(x, self.values, self.col_idx, self.group_ptr, self.perm, bias, self.out_channels,
                              [self.in_channels, *self.kernel_size], list(self.stride), self._pad, list(self.dilation),
                              relu, residual)

    def extra_repr(self) -> str:
        sparsity = "unknown (meta)" if self.values.is_meta else f"{self.matrix().sparsity:.1%}"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, V={self.vector}, sparsity={sparsity}, layout=NCHW")
