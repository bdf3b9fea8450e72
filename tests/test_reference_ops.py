"""The reference path of shflbw.linear / shflbw.spmm equals the dense op on the masked weight."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import shflbw
from shflbw.testing import random_problem, rel_error

from conftest import TOLERANCE

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (M, K, T-shape, V, density): batch dims, T = 1, T not a power of two, M not a multiple of V
CASES = [
    (64, 48, (7,), 16, 0.5),
    (200, 97, (3, 5), 64, 0.25),
    (130, 33, (1,), 32, 0.3),
    (96, 40, (2, 1, 9), 32, 0.0),
    (96, 40, (13,), 32, 1.0),
]


def _case_id(c):
    m, k, t, v, d = c
    return f"M{m}-K{k}-T{'x'.join(map(str, t))}-V{v}-d{d}"


@pytest.fixture(autouse=True)
def _reference_backend():
    with shflbw.ops.backend("reference"):
        yield


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_linear_matches_dense(case, dtype, with_bias, nan_poison):
    m, k, tshape, v, density = case
    weight, mask, perm, w = random_problem(m, k, v, density, dtype, seed=m * k)
    x = torch.randn(*tshape, k).to(dtype)
    bias = torch.randn(m).to(dtype) if with_bias else None
    y = shflbw.linear(x, w, bias)
    ref = F.linear(x.double(), (weight * mask).double(), None if bias is None else bias.double())
    assert y.shape == (*tshape, m) and y.dtype == dtype
    assert rel_error(y, ref) < TOLERANCE[dtype]


def test_linear_non_contiguous_input():
    weight, mask, perm, w = random_problem(80, 64, 16, 0.4, seed=1)
    x = torch.randn(64, 11).t()  # (11, 64), non-contiguous
    assert not x.is_contiguous()
    ref = F.linear(x.double(), (weight * mask).double())
    assert rel_error(shflbw.linear(x, w), ref) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_spmm_matches_dense(dtype, nan_poison):
    weight, mask, perm, w = random_problem(150, 70, 32, 0.3, dtype, seed=2, empty_groups=(1,))
    b = torch.randn(70, 23).to(dtype)
    c = shflbw.spmm(w, b)
    assert c.shape == (150, 23)
    assert rel_error(c, (weight * mask).double() @ b.double()) < TOLERANCE[dtype]
    bt = torch.randn(23, 70).to(dtype).t()  # non-contiguous feature-major operand
    assert rel_error(shflbw.spmm(w, bt), (weight * mask).double() @ bt.double()) < TOLERANCE[dtype]


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 150),
    k=st.integers(1, 80),
    t=st.integers(1, 20),
    v=st.sampled_from([16, 32, 64]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_linear_property(m, k, t, v, density, seed):
    weight, mask, perm, w = random_problem(m, k, v, density, seed=seed)
    x = torch.randn(t, k, generator=torch.Generator().manual_seed(seed + 1))
    ref = F.linear(x.double(), (weight * mask).double())
    out = shflbw.linear(x, w)
    if ref.norm() == 0:
        assert torch.equal(out, torch.zeros_like(out))
    else:
        assert rel_error(out, ref) < TOLERANCE[torch.float32]


def test_gradients_match_dense_autograd():
    weight, mask, perm, w = random_problem(70, 40, 16, 0.4, seed=4, empty_groups=(2,))
    x = torch.randn(3, 6, 40, dtype=torch.float64).float().requires_grad_()
    values = w.values.clone().requires_grad_()
    bias = torch.randn(70).requires_grad_()
    y = torch.ops.shflbw.linear(x, values, w.col_idx, w.group_ptr, w.perm, bias, 70)
    g = torch.randn_like(y)
    y.backward(g)

    wd = (weight * mask).detach().requires_grad_()
    xd = x.detach().clone().requires_grad_()
    bd = bias.detach().clone().requires_grad_()
    F.linear(xd, wd, bd).backward(g)
    assert rel_error(x.grad, xd.grad) < 1e-5
    assert rel_error(bias.grad, bd.grad) < 1e-5
    # the gradient of each kept value is the dense weight gradient at its position
    gw = type(w)(w.shape, w.vector, w.perm, w.group_ptr, w.col_idx, values.grad).to_dense()
    assert rel_error(gw, wd.grad * mask) < 1e-5


def test_opcheck_linear_and_spmm():
    weight, mask, perm, w = random_problem(48, 24, 16, 0.5, seed=6)
    x = torch.randn(5, 24, requires_grad=True)
    values = w.values.clone().requires_grad_()
    bias = torch.randn(48, requires_grad=True)
    torch.library.opcheck(torch.ops.shflbw.linear, (x, values, w.col_idx, w.group_ptr, w.perm, bias, 48))
    torch.library.opcheck(torch.ops.shflbw.linear, (x, values, w.col_idx, w.group_ptr, w.perm, None, 48))
    torch.library.opcheck(torch.ops.shflbw.spmm, (w.values, w.col_idx, w.group_ptr, w.perm, torch.randn(24, 9), 48))


def test_torch_compile_fullgraph():
    weight, mask, perm, w = random_problem(48, 24, 16, 0.5, seed=8)
    bias = torch.randn(48)

    def f(x):
        return torch.relu(shflbw.linear(x, w, bias)) * 2

    x = torch.randn(4, 24)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.allclose(compiled(x), f(x))


# ---------------------------------------------------------------- bad input
def test_linear_bad_inputs():
    weight, mask, perm, w = random_problem(48, 24, 16, 0.5)
    with pytest.raises(ValueError, match="needs size 24"):
        shflbw.linear(torch.randn(3, 25), w)
    with pytest.raises(TypeError, match="dtype"):
        shflbw.linear(torch.randn(3, 24, dtype=torch.float64), w)
    with pytest.raises(ValueError, match="bias must be"):
        shflbw.linear(torch.randn(3, 24), w, torch.randn(47))
    with pytest.raises(TypeError, match="ShflBWMatrix"):
        shflbw.linear(torch.randn(3, 24), weight)
    with pytest.raises(TypeError, match="torch.Tensor"):
        shflbw.linear([[1.0] * 24], w)


def test_spmm_bad_inputs():
    weight, mask, perm, w = random_problem(48, 24, 16, 0.5)
    with pytest.raises(ValueError, match="2-D"):
        shflbw.spmm(w, torch.randn(24))
    with pytest.raises(ValueError, match="needs size 24"):
        shflbw.spmm(w, torch.randn(23, 4))


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        shflbw.ops.set_backend("cuda")
