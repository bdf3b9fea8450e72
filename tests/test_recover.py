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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("score", ["obs", "wanda"])
def test_oneshot_on_the_gpu_matches_the_cpu(score):
    # the one-shot path runs where the model is (session 8: a CPU-made identity matrix failed it on
    # the GPU) and does as well there as on the CPU (masks may differ where scores tie)
    dense = _mlp()
    calib = [_correlated_inputs(256, 64, s) for s in range(2)]
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("*",), exclude=(), time_budget=2)
    cpu = oneshot_prune_(copy.deepcopy(dense), cfg, calib, progress=False, score=score)
    gpu = oneshot_prune_(copy.deepcopy(dense).cuda(), cfg, [x.cuda() for x in calib], progress=False, score=score)
    x = _correlated_inputs(64, 64, 7)
    with torch.no_grad():
        want, err_cpu = dense(x), rel_error(cpu(x), dense(x))
        assert rel_error(gpu(x.cuda()).cpu(), want) < 1.1 * err_cpu


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))


@pytest.mark.parametrize("target,score", [("dense", "wanda"), ("layer", "wanda"), ("dense", "obs"),
                                          ("dense", "magnitude")])
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
    with pytest.raises(TypeError, match="iterable of batches.*NoneType"):
        oneshot_prune_(_mlp(), cfg, None, progress=False)
    with pytest.raises(TypeError, match="iterable of batches.*Tensor"):  # not one batch per row
        oneshot_prune_(_mlp(), cfg, torch.randn(4, 64), progress=False)


def _layer_problem(m=70, k=48, vector=16, seed=5):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(m, k, generator=gen, dtype=torch.float64)
    x = _correlated_inputs(400, k, seed).double()
    h = x.t() @ x / 400
    return weight, h


def _output_error(new, weight, h, cross=None):
    """||X new^T - X_d weight^T||^2 / n up to a constant: (w - w*) H (w - w*) summed over rows."""
    target = weight if cross is None else weight @ cross @ torch.linalg.inv(h)
    d = (new.double() - target)
    return float(torch.einsum("ik,kl,il->", d, h, d))


@pytest.mark.parametrize("with_cross", [False, True])
def test_greedy_group_obs_is_the_refit_of_its_mask(with_cross):
    from shflbw.recover.group_obs import greedy_group_obs

    weight, h = _layer_problem()
    cross = (h + 0.05 * torch.eye(h.shape[0], dtype=h.dtype)) if with_cross else None
    perm = torch.randperm(70, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([10, 0, 48, 7, 12])  # 5 groups, the last one short (70 = 4 * 16 + 6)
    new, mask = greedy_group_obs(weight, h, perm, 16, keep, damp=0.01, cross=cross)
    for g in range(5):
        rows = perm[g * 16 : (g + 1) * 16]
        assert bool((mask[rows] == mask[rows[0]]).all())  # one column set per group: Shfl-BW
        assert int(mask[rows[0]].sum()) == int(keep[g])
    assert bool((new[~mask] == 0).all())
    refit = reconstruct_group_lstsq(weight, mask, perm, 16, h, damp=0.01, cross=cross)
    assert torch.allclose(new, refit, atol=1e-8, rtol=1e-7)
    # chunks of groups give the same answer as all groups at once
    new2, mask2 = greedy_group_obs(weight, h, perm, 16, keep, damp=0.01, cross=cross, chunk_bytes=1)
    assert torch.equal(mask, mask2) and torch.allclose(new, new2, atol=1e-10)


def test_greedy_group_obs_beats_scoring_then_refitting():
    from shflbw.prune import prune
    from shflbw.recover.group_obs import greedy_group_obs

    weight, h = _layer_problem(m=64, k=96, vector=16, seed=8)
    hinv = torch.linalg.inv(h + 0.01 * float(h.diagonal().mean()) * torch.eye(96, dtype=h.dtype))
    r = prune(weight.float(), 0.75, 16, importance=(weight ** 2 / hinv.diagonal()).float(), time_budget=2)
    keep = r.mask[r.perm[::16].long()].sum(1)
    scored = reconstruct_group_lstsq(weight, r.mask, r.perm, 16, h, damp=0.01)
    greedy, mask = greedy_group_obs(weight, h, r.perm, 16, keep, damp=0.01)
    assert int(mask.sum()) == int(r.mask.sum())
    e_scored, e_greedy = _output_error(scored, weight, h), _output_error(greedy, weight, h)
    assert e_greedy < 0.9 * e_scored, (e_greedy, e_scored)


def test_greedy_group_obs_bad_keep():
    from shflbw.recover.group_obs import greedy_group_obs

    weight, h = _layer_problem()
    with pytest.raises(ValueError, match="groups"):
        greedy_group_obs(weight, h, torch.arange(70), 16, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="keep counts"):
        greedy_group_obs(weight, h, torch.arange(70), 16, torch.tensor([1, 2, 3, 4, 49]))
    with pytest.raises(ValueError, match="columns"):
        oneshot_prune_(_mlp(), shflbw.ShflBWConfig(sparsity=0.5, vector=16), [torch.randn(4, 64)], progress=False,
                       columns="random")


def _offset_inputs(n, k, seed):
    """Correlated inputs with a mean away from zero (as post-GELU or LayerNorm-shifted activations)."""
    return _correlated_inputs(n, k, seed) + torch.linspace(-1.0, 2.0, k)


@pytest.mark.parametrize("columns", ["score", "greedy"])
def test_fit_bias_is_the_refit_with_an_intercept(columns):
    # with fit_bias the kept weights and the bias are the least-squares fit of the dense layer's output
    # by [X_S, 1] on the calibration data, row by row (damping made negligible)
    torch.manual_seed(0)
    layer = nn.Linear(48, 32).double()
    calib = [_offset_inputs(200, 48, s).double() for s in range(2)]
    cfg = shflbw.ShflBWConfig(sparsity=0.5, vector=16, include=("*",), exclude=(), time_budget=2)
    model = nn.Sequential(copy.deepcopy(layer))
    oneshot_prune_(model, cfg, calib, progress=False, damp=1e-9, columns=columns, regroup=False, fit_bias=True)
    mask = shflbw.nn.masked.mask_of(model[0]).mask
    x = torch.cat(calib)
    with torch.no_grad():
        y = layer(x)
        w_new, b_new = model[0].weight, model[0].bias.detach()
    for i in range(32):
        cols = torch.nonzero(mask[i]).flatten()
        a = torch.cat([x[:, cols], torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        sol = torch.linalg.lstsq(a, y[:, i:i + 1]).solution.flatten()
        assert torch.allclose(w_new[i, cols], sol[:-1], atol=1e-5), i
        assert float(b_new[i]) == pytest.approx(float(sol[-1]), abs=1e-5)
        assert bool((w_new[i][~mask[i]] == 0).all())


def test_fit_bias_never_fits_worse_on_the_same_mask():
    # same mask both ways (Wanda scores see no centring, columns by score): adding the intercept to the
    # least-squares refit can only lower the calibration error; inputs far from zero mean gain most
    layer = nn.Sequential(nn.Linear(64, 32))
    calib = [_offset_inputs(256, 64, s) + 5.0 for s in range(2)]
    x = torch.cat(calib)
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("*",), exclude=(), time_budget=2)
    errors, masks = {}, {}
    for fit in (False, True):
        m = oneshot_prune_(copy.deepcopy(layer), cfg, calib, progress=False, fit_bias=fit, score="wanda",
                           columns="score", target="layer", damp=1e-6)
        masks[fit] = shflbw.nn.masked.mask_of(m[0]).mask
        with torch.no_grad():
            errors[fit] = rel_error(m(x), layer(x))
    assert torch.equal(masks[True], masks[False])
    assert errors[True] < 0.9 * errors[False], errors
    # a layer without a bias is refit as before (nothing to fit)
    nobias = nn.Sequential(nn.Linear(64, 32, bias=False))
    a = oneshot_prune_(copy.deepcopy(nobias), cfg, calib, progress=False, fit_bias=True)
    b = oneshot_prune_(copy.deepcopy(nobias), cfg, calib, progress=False, fit_bias=False)
    assert torch.equal(a[0].weight, b[0].weight)


@pytest.mark.parametrize("fit_bias", [False, True])
def test_oneshot_on_a_model_already_in_masked_mode_keeps_its_refit(fit_bias):
    # In masked mode a layer's weight is computed (weight * mask) on each access; the refit used to
    # be written into that temporary and lost, leaving the old weights under the new mask.
    base = _mlp()
    masked = shflbw.sparsify_(copy.deepcopy(base), shflbw.ShflBWConfig(sparsity=0.25, vector=16, time_budget=1),
                              progress=False)
    plain = copy.deepcopy(base)  # the same function, not in masked mode
    with torch.no_grad():
        for i in (0, 2):
            plain[i].weight.copy_(masked[i].weight)
    cfg = shflbw.ShflBWConfig(sparsity=0.5, vector=16, time_budget=None)
    calib = [torch.randn(32, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    a = oneshot_prune_(masked, cfg, calib, progress=False, fit_bias=fit_bias)
    b = oneshot_prune_(plain, cfg, calib, progress=False, fit_bias=fit_bias)
    x = torch.randn(16, 64)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), rtol=0, atol=1e-6)
