"""``ShflBWLinear``: an nn.Linear whose weight is a packed Shfl-BW matrix, run by ``shflbw.linear``."""

from __future__ import annotations

import torch
from torch import nn

from shflbw.format.matrix import ShflBWMatrix
from shflbw.ops.linear import linear_op


class ShflBWLinear(nn.Module):
    """Drop-in for nn.Linear (inference) holding the packed tensors as buffers.

    The buffers (values, col_idx, group_ptr, perm) are what ``state_dict`` saves; ``matrix()``
    returns them as a ShflBWMatrix.
    """

    def __init__(self, w: ShflBWMatrix, bias: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(w, ShflBWMatrix):
            raise TypeError(f"w must be a ShflBWMatrix, got {type(w).__name__}")
        self.out_features, self.in_features = w.shape
        self.vector = w.vector
        for name, t in w.tensors().items():
            self.register_buffer(name, t)
        if bias is not None:
            if bias.shape != (self.out_features,):
                raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
            self.bias = nn.Parameter(bias.detach().to(w.dtype), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    def matrix(self) -> ShflBWMatrix:
        return ShflBWMatrix((self.out_features, self.in_features), self.vector, self.perm, self.group_ptr,
                            self.col_idx, self.values, validate=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor, perm: torch.Tensor, vector: int) -> "ShflBWLinear":
        from shflbw.nn.masked import dense_weight

        w = ShflBWMatrix.from_dense(dense_weight(linear).detach(), mask, perm, vector=vector)
        return cls(w, None if linear.bias is None else linear.bias.detach())

    def to_linear(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.matrix().to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return linear_op(x, self.values, self.col_idx, self.group_ptr, self.perm, bias, self.out_features)

    def extra_repr(self) -> str:
        sparsity = "unknown (meta)" if self.values.is_meta else f"{self.matrix().sparsity:.1%}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"V={self.vector}, sparsity={sparsity}, layout=token-major")
