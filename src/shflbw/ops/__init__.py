"""Registered torch.library ops (``torch.ops.shflbw.*``), their dispatch and autograd."""

from shflbw.ops.dispatch import backend, get_backend, set_backend
from shflbw.ops.linear import linear
from shflbw.ops.spmm import spmm

__all__ = ["backend", "get_backend", "linear", "set_backend", "spmm"]
