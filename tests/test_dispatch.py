"""Eager calls skip torch.library's dispatch only when nothing needs to see the op."""

import torch

import shflbw
from shflbw.ops.dispatch import can_call_directly
from shflbw.testing import random_shflbw_mask

from conftest import RecordOps


def _linear():
    g = torch.Generator().manual_seed(0)
    mask, perm = random_shflbw_mask(32, 24, 16, 0.5, generator=g)
    w = shflbw.ShflBWMatrix.from_dense(torch.randn(32, 24, generator=g), mask, perm, vector=16)
    return shflbw.ShflBWLinear(w, torch.randn(32, generator=g))


def test_who_may_call_directly():
    x = torch.randn(3, 24)
    assert can_call_directly((x, torch.nn.Parameter(torch.randn(2), requires_grad=False), None, 5))
    with torch.no_grad():
        assert can_call_directly((x.requires_grad_(),))
    assert not can_call_directly((x,))  # grad enabled and x requires it: autograd must see the op
    with RecordOps():
        assert not can_call_directly((torch.randn(3),))
    seen = []
    torch.vmap(lambda t: seen.append(can_call_directly((t,))) or t)(torch.randn(2, 3))
    assert seen == [False]  # a functorch transform: the op must see the batched tensor
    assert torch.compile(lambda t: t * float(can_call_directly((t,))), fullgraph=True, backend="eager")(
        torch.ones(2)).sum() == 0  # tracing: the op must be in the graph


def test_direct_and_dispatched_calls_agree_and_modes_see_the_op():
    lin = _linear()
    x = torch.randn(5, 24)
    with torch.no_grad():
        direct = lin(x)
    with torch.no_grad(), RecordOps() as mode:
        dispatched = lin(x)
    assert any("shflbw.linear" in op for op in mode.ops)  # a dispatch mode still sees shflbw's op
    assert torch.equal(direct, dispatched)
    y = lin(x.requires_grad_())  # autograd through the registered op
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
