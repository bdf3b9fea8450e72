"""shflbw.mlp == F.linear -> activation -> F.linear on the masked weights, on both backends."""

import pytest
import torch
import torch.nn.functional as F

import shflbw
from shflbw.ops.mlp import fold_hidden_permutation
from shflbw.testing import random_problem, rel_error

from conftest import KERNEL_TOLERANCE

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ACT = {"none": lambda h: h, "relu": F.relu, "gelu": F.gelu}


def _block(k, hidden, out, v, density, dtype, seed=0, bias=True):
    w1d, m1, p1, w1 = random_problem(hidden, k, v, density, dtype, seed=seed, device=DEVICE, empty_groups=(1,))
    w2d, m2, p2, w2 = random_problem(out, hidden, v, density, dtype, seed=seed + 1, device=DEVICE)
    b1 = torch.randn(hidden, device=DEVICE).to(dtype) if bias else None
    b2 = torch.randn(out, device=DEVICE).to(dtype) if bias else None
    return (w1d * m1, w2d * m2, b1, b2), (w1, w2, b1, b2)


def _dense(x, dense, act):
    w1, w2, b1, b2 = dense
    h = ACT[act](F.linear(x.double(), w1.double(), None if b1 is None else b1.double()))
    return F.linear(h, w2.double(), None if b2 is None else b2.double())


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("act", ["gelu", "relu", "none"])
# T <= 32 takes the decode kernels (group-order fc1, folded fc2); T = 40 the feature-major region.
@pytest.mark.parametrize("k,hidden,out,t,v", [(40, 70, 36, 19, 32), (32, 48, 50, 5, 16), (40, 70, 36, 40, 32)],
                         ids=["M70-pad", "T5", "T40-feature-major"])
def test_mlp_matches_dense(backend, dtype, act, k, hidden, out, t, v, nan_poison):
    pytest.importorskip("triton") if backend == "triton" else None
    dense, packed = _block(k, hidden, out, v, 0.4, dtype, seed=t)
    block = shflbw.PackedMLP(*packed, activation=act)
    x = torch.randn(2, t, k, device=DEVICE).to(dtype)
    with shflbw.ops.backend(backend):
        y = shflbw.mlp(x, block)
    assert y.shape == (2, t, out)
    assert rel_error(y, _dense(x, dense, act)) < 2 * KERNEL_TOLERANCE[dtype]


def test_fold_keeps_columns_sorted_and_values_aligned():
    dense, (w1, w2, b1, b2) = _block(24, 70, 40, 16, 0.5, torch.float32)
    cols, vals = fold_hidden_permutation(w1, w2)
    ptr = w2.group_ptr_host()
    inv1 = torch.empty_like(w1.perm)
    inv1[w1.perm.long()] = torch.arange(70, dtype=inv1.dtype, device=inv1.device)
    for g in range(w2.num_groups):
        c = cols[ptr[g] : ptr[g + 1]]
        assert bool((c[1:] > c[:-1]).all())
        old = w2.col_idx[ptr[g] : ptr[g + 1]]
        # the folded vector for old column j sits where inv1[j] landed
        for j_old, row in zip(old.tolist(), w2.values[ptr[g] : ptr[g + 1]]):
            pos = int(torch.nonzero(c == inv1[j_old])[0])
            assert torch.equal(vals[ptr[g] + pos], row)


def test_mlp_bad_inputs():
    dense, (w1, w2, b1, b2) = _block(24, 48, 40, 16, 0.5, torch.float32)
    with pytest.raises(ValueError, match="activation"):
        shflbw.PackedMLP(w1, w2, activation="swish")
    with pytest.raises(ValueError, match="fc2 takes"):
        shflbw.PackedMLP(w1, w1)
    with pytest.raises(ValueError, match="bias1"):
        shflbw.PackedMLP(w1, w2, bias1=torch.randn(3))
    block = shflbw.PackedMLP(w1, w2)
    with pytest.raises(ValueError, match="needs size 24"):
        shflbw.mlp(torch.randn(3, 25), block)
