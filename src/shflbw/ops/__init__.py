"""Registered torch.library ops (``torch.ops.shflbw.*``), their dispatch and autograd."""

from shflbw.ops.conv2d import conv2d, conv2d_chwn
from shflbw.ops.dispatch import backend, get_backend, set_backend
from shflbw.ops.linear import linear
from shflbw.ops.mlp import PackedMLP, mlp
from shflbw.ops.spmm import spmm

__all__ = ["PackedMLP", "backend", "conv2d", "conv2d_chwn", "get_backend", "linear", "mlp", "set_backend", "spmm"]
