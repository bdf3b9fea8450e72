"""Which implementation an op runs: the Triton kernels or the pure-PyTorch reference.

``auto`` (the default) runs Triton on CUDA tensors when Triton imports, the reference elsewhere.
``triton`` forces the kernels (on CPU they then need TRITON_INTERPRET=1: tests use this);
``reference`` forces the reference (benchmarks and debugging).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

_BACKENDS = ("auto", "triton", "reference")
_backend = os.environ.get("SHFLBW_BACKEND", "auto")
if _backend not in _BACKENDS:
    raise ValueError(f"SHFLBW_BACKEND must be one of {_BACKENDS}, got {_backend!r}")


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {name!r}")
    if name == "triton" and not triton_available():
        raise RuntimeError("backend 'triton' asked for, but triton is not installed (pip install triton)")
    _backend = name


@contextlib.contextmanager
def backend(name: str):
    """Run the ops inside the block with the given backend: ``with shflbw.ops.backend("reference"): ...``."""
    old = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(old)


def use_triton(t: torch.Tensor, vector: int) -> bool:
    """Whether to run the Triton kernels for operand ``t`` and a packed matrix of vector size V.

    The kernels tile V rows with tl.arange, which needs a power of two: other multiples of 16
    (48, 80, ...) always take the reference path, which is correct on any device but slower.
    """
    if _backend == "reference" or vector & (vector - 1):
        return False
    if _backend == "triton":
        return True
    return t.is_cuda and triton_available()
