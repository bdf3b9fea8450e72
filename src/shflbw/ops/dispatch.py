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
from torch.utils._python_dispatch import _get_current_dispatch_mode

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


_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _transforms_active() -> bool:
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None  # vmap, grad, ... (functorch)
    except AttributeError:  # pragma: no cover - older torch without the query: assume none
        return False


def can_call_directly(args) -> bool:
    """Whether an op call may run its implementation directly instead of through torch.library.

    torch.library's dispatch (autograd wrapper, dynamo guard, alias checks) costs about 35 us of host
    time a call here (linear, 1024 x 1024: 54 us through the op against 17 us for the implementation
    with the Triton launches stubbed out), as much as a small layer's GPU time. It is only needed
    when something must see the op: torch.compile tracing, a dispatch mode (fake tensors, meta
    tracing, profilers of ops), functorch transforms, tensor subclasses, or autograd (grad enabled
    and an input that requires it). Otherwise the direct call computes exactly the same.
    """
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None or _transforms_active():
        return False
    grad = torch.is_grad_enabled()
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN_TENSORS or (grad and a.requires_grad)):
            return False
    return True


class EagerOp:
    """A ``torch.library.custom_op`` that eager calls with nothing to dispatch run directly.

    ``op`` is the registered op (``torch.ops.shflbw.<name>``; fake and autograd registrations go
    to it); calling the EagerOp runs ``op`` or, when :func:`can_call_directly`, the function itself.
    """

    def __init__(self, name: str, fn):
        self.impl = fn
        self.op = torch.library.custom_op(name, mutates_args=())(fn)

    def register_fake(self, fn):
        return self.op.register_fake(fn)

    def register_autograd(self, backward, setup_context=None):
        return self.op.register_autograd(backward, setup_context=setup_context)

    def __call__(self, *args):
        return self.impl(*args) if can_call_directly(args) else self.op(*args)


def eager_op(name: str):
    """Decorator: ``@eager_op("shflbw::linear")`` in place of ``@torch.library.custom_op(..., mutates_args=())``."""
    return lambda fn: EagerOp(name, fn)
