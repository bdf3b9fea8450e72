import copy

import pytest
import torch
from torch import nn

import shflbw
from shflbw.recover import allocate_sparsity, config_with, oneshot_prune_
from shflbw.recover.allocate import levels_around, refit_error, relative_error, spend_budget


def test_spend_budget_takes_the_cheapest_steps_and_reaches_the_target():
    # layer a loses little per weight until 0.75, b a lot: a goes up first
    errors = {"a": {0.5: 0.0, 0.625: 0.01, 0.75: 0.02, 0.875: 0.5},
              "b": {0.5: 0.1, 0.625: 0.3, 0.75: 0.6, 0.875: 0.9}}
    got = spend_budget(errors, {"a": 100, "b": 100}, 0.625)
    assert got == {"a": 0.75, "b": 0.5}
    got = spend_budget(errors, {"a": 100, "b": 100}, 0.70)
    removed = sum(100 * s for s in got.values()) / 200
    assert removed >= 0.70 and got == {"a": 0.75, "b": 0.75}  # a's next step (0.48 / 12.5) costs more than b's
    with pytest.raises(ValueError, match="cannot reach"):
        spend_budget(errors, {"a": 100, "b": 100}, 0.9)
    with pytest.raises(ValueError, match="no layers"):
        spend_budget({}, {}, 0.5)


def test_levels_around_the_target():
    assert levels_around(0.75) == [0.5625, 0.625, 0.6875, 0.75, 0.8125, 0.875, 0.9375]
    assert levels_around(0.1)[0] == 0.0 and max(levels_around(0.95)) == 0.97


def test_refit_error_grows_with_sparsity_and_is_zero_at_zero():
    torch.manual_seed(0)
    w = torch.randn(64, 48)
    x = torch.randn(500, 48)
    h = x.double().t() @ x.double() / 500
    e = [refit_error(w, h, s, 16) for s in (0.0, 0.25, 0.5, 0.75)]
    assert e[0] == 0.0 and e[1] < e[2] < e[3] < 1
    # the error is the explicit one: ||X (W - W_s)^T||^2 / ||X W^T||^2 with the refit weights
    assert 0.1 < e[2] < 0.7


def _two_layer_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    with torch.no_grad():  # layer 0: a few large columns carry it (easy to prune); layer 2: dense Gaussian
        model[0].weight.mul_(0.02)
        model[0].weight[:, :8] *= 100
    return model


def test_allocation_gives_the_easy_layer_more_sparsity_and_lowers_the_error():
    model = _two_layer_model()
    calib = [torch.randn(256, 64) for _ in range(2)]
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("*",), exclude=(), time_budget=2)
    before = copy.deepcopy(model.state_dict())
    alloc, curves = allocate_sparsity(model, cfg, calib, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not changed
    assert alloc["0"] > 0.75 > alloc["2"]
    assert (alloc["0"] + alloc["2"]) / 2 >= 0.75
    summed = sum(curves[n][alloc[n]] for n in alloc)
    assert summed < curves["0"][0.75] + curves["2"][0.75]
    # the config carries it; one-shot prunes each layer to its own sparsity
    pruned = oneshot_prune_(copy.deepcopy(model), config_with(cfg, alloc), calib, progress=False)
    for n in ("0", "2"):
        zero = float((pruned.get_submodule(n).weight == 0).float().mean())
        assert zero == pytest.approx(alloc[n], abs=1 / 64)


def test_config_with_overrides_every_earlier_pattern():
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=32, overrides={"enc.0": {"vector": 16}, "enc.*": {"sparsity": 0.5}})
    new = config_with(cfg, {"enc.0": 0.9, "enc.1": 0.6})
    assert new.for_layer("enc.0") == (0.9, 16) and new.for_layer("enc.1") == (0.6, 32)
    assert new.for_layer("enc.2") == (0.5, 32) and cfg.for_layer("enc.0") == (0.5, 16)


def test_allocation_rejects_what_it_cannot_do():
    cfg = shflbw.ShflBWConfig(sparsity=0.5, vector=16, include=("*",), exclude=())
    with pytest.raises(ValueError, match="N:M"):
        allocate_sparsity(_two_layer_model(), cfg, [torch.randn(8, 64)], pattern="2:4", progress=False)
    with pytest.raises(ValueError, match="empty"):
        allocate_sparsity(_two_layer_model(), cfg, [], progress=False)


def test_relative_error_weighs_every_output_feature_alike():
    # the explicit definition on data: mean over features of ||X (w_i - new_i)||^2 / ||(X - mean) w_i||^2;
    # an outlier feature (row x 1000) counts once, and the inputs' mean is no signal
    torch.manual_seed(1)
    w = torch.randn(64, 48, dtype=torch.float64)
    w[5] *= 1000
    new = w + 0.1 * torch.randn(64, 48, dtype=torch.float64) * w.abs().mean(1, keepdim=True)
    x = torch.randn(500, 48, dtype=torch.float64) + 3.0
    h, mu = x.t() @ x / 500, x.mean(0)
    want = (((x @ (w - new).t()) ** 2).sum(0) / (((x - mu) @ w.t()) ** 2).sum(0)).mean()
    assert relative_error(new, w, h, mu) == pytest.approx(float(want), rel=1e-9)
    pooled = float(((x @ (w - new).t()) ** 2).sum() / (((x - mu) @ w.t()) ** 2).sum())
    assert abs(relative_error(new, w, h, mu) - pooled) > 0.1 * pooled  # not the energy-weighted error
