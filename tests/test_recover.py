import copy

import pytest
import torch
from torch import nn

import shflbw
from shflbw.recover import oneshot_prune_, reconstruct_group_lstsq
from shflbw.recover.reconstruct import _rowwise_lstsq
from shflbw.testing import random_problem, rel_error


def _correlated_inputs(n, k, seed):
    """Inputs near a fixed k/4-dimensional subspace (as layer activations are), fresh samples per seed."""
    basis = torch.randn(k // 4, k, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k // 4, generator=g) @ basis + 0.1 * torch.randn(n, k, generator=g)


def test_group_solve_equals_row_solves():
    weight, mask, perm, _ = random_problem(70, 48, 16, 0.4, seed=3)
    x = _correlated_inputs(300, 48, 0)
    h = x.double().t() @ x.double() / 300
    a = reconstruct_group_lstsq(weight, mask, perm, 16, h, damp=0.01)
    b = _rowwise_lstsq(weight, mask, h, damp=0.01)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert bool((a[~mask] == 0).all())


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))


@pytest.mark.parametrize("target,score", [("dense", "wanda"), ("layer", "wanda"), ("dense", "obs")])
def test_reconstruction_lowers_output_error(target, score):
    dense = _mlp()
    calib = [_correlated_inputs(256, 64, s) for s in range(4)]
    test_x = _correlated_inputs(512, 64, 99)
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("*",), exclude=(), time_budget=2)
    errors = {}
    for recon in (False, True):
        m = oneshot_prune_(copy.deepcopy(dense), cfg, calib, reconstruct=recon, progress=False, target=target, score=score)
        with torch.no_grad():
            errors[recon] = rel_error(m(test_x), dense(test_x))
        assert float((m[0].weight == 0).float().mean()) == pytest.approx(0.75, abs=0.01)
    assert errors[True] < 0.7 * errors[False], errors
    # the result is in masked mode and packs
    shflbw.compress_(m)
    assert isinstance(m[0], shflbw.ShflBWMLP)  # Linear -> GELU -> Linear runs as one region


def test_bad_arguments():
    cfg = shflbw.ShflBWConfig(sparsity=0.5, vector=16)
    with pytest.raises(ValueError, match="empty"):
        oneshot_prune_(_mlp(), cfg, [], progress=False)
    with pytest.raises(ValueError, match="target"):
        oneshot_prune_(_mlp(), cfg, [torch.randn(4, 64)], progress=False, target="teacher")
    with pytest.raises(ValueError, match="score"):
        oneshot_prune_(_mlp(), cfg, [torch.randn(4, 64)], progress=False, score="taylor")
