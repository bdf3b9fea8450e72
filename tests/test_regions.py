"""MLP regions: compress_ runs Linear -> activation -> Linear blocks as one ShflBWMLP, reversibly."""

import copy
import json
import os

import pytest
import torch
from torch import nn

import shflbw
from shflbw.nn.mlp import ShflBWMLP
from shflbw.nn.regions import fuse_regions_, unfuse_regions_
from shflbw.testing import rel_error

CFG = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("*",), exclude=(), time_budget=2)


def _seq(act=None, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(48, 96), act or nn.GELU(), nn.Linear(96, 40), nn.ReLU(), nn.Linear(40, 8))


def _masked(model, cfg=CFG):
    return shflbw.sparsify_(model, cfg, progress=False)


@pytest.mark.parametrize("act", [nn.GELU(), nn.ReLU()], ids=["gelu", "relu"])
def test_sequential_block_is_fused_and_exact(act):
    masked = _masked(_seq(act))
    x = torch.randn(3, 7, 48)
    with torch.no_grad():
        ref = masked(x)
    model = shflbw.compress_(copy.deepcopy(masked))
    assert isinstance(model[0], ShflBWMLP) and isinstance(model[1], nn.Identity) and isinstance(model[2], nn.Identity)
    assert isinstance(model[4], shflbw.ShflBWLinear)  # the last Linear has no partner: per layer
    assert "feature-major inside" in repr(model[0])
    with torch.no_grad():
        assert rel_error(model(x), ref) < 1e-5
        assert rel_error(model(x[0, :1]), ref[0, :1]) < 1e-5  # one token


def test_unfuse_and_decompress_restore_the_layers_bit_for_bit():
    masked = _masked(_seq())
    per_layer = shflbw.compress_(copy.deepcopy(masked), regions=False)
    fused = shflbw.compress_(copy.deepcopy(masked))
    assert unfuse_regions_(fused) == 1
    for i in (0, 2, 4):
        for name in ("values", "col_idx", "group_ptr", "perm", "bias"):
            assert torch.equal(getattr(fused[i], name), getattr(per_layer[i], name)), (i, name)
    assert isinstance(fused[1], nn.GELU)
    assert fuse_regions_(fused) == ["0"]
    back = shflbw.decompress_(fused)
    x = torch.randn(5, 48)
    with torch.no_grad():
        assert rel_error(back(x), masked(x)) < 1e-6
    assert isinstance(back[0], nn.Linear) and isinstance(back[1], nn.GELU)


def test_unfusable_activation_stays_per_layer():
    model = shflbw.compress_(_masked(_seq(nn.Tanh())))
    assert isinstance(model[0], shflbw.ShflBWLinear) and isinstance(model[1], nn.Tanh)
    assert isinstance(model[2], ShflBWMLP)  # the next Linear -> ReLU -> Linear fuses


def test_save_load_keeps_regions(tmp_path):
    masked = _masked(_seq())
    model = shflbw.compress_(copy.deepcopy(masked))
    shflbw.save(model, str(tmp_path / "m"))
    assert isinstance(model[0], ShflBWMLP)  # fused again after the write
    meta = json.load(open(os.path.join(tmp_path, "m", "shflbw.json")))
    assert meta["regions"] is True and "0" in meta["layers"] and "2" in meta["layers"]
    loaded = shflbw.load(str(tmp_path / "m"), _seq())
    assert isinstance(loaded[0], ShflBWMLP)
    x = torch.randn(4, 48)
    with torch.no_grad():
        assert rel_error(loaded(x), masked(x)) < 1e-5


def test_hugging_face_bert_mlp_is_fused(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    masked = _masked(transformers.BertModel(cfg).eval(),
                     shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("encoder.*",), exclude=(), time_budget=2))
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = masked(input_ids=ids).last_hidden_state
    model = shflbw.compress_(copy.deepcopy(masked))
    layer = model.encoder.layer[0]
    assert isinstance(layer.intermediate.dense, ShflBWMLP)
    assert isinstance(layer.output.original.dense, nn.Identity)  # the tail runs as add + LayerNorm (test_addnorm.py)
    with torch.no_grad():
        assert rel_error(model(input_ids=ids).last_hidden_state, ref) < 1e-5
    shflbw.save(model, str(tmp_path / "bert"))
    skeleton = transformers.BertModel(cfg).eval()
    loaded = shflbw.load(str(tmp_path / "bert"), skeleton)
    assert isinstance(loaded.encoder.layer[1].intermediate.dense, ShflBWMLP)
    with torch.no_grad():
        assert rel_error(loaded(input_ids=ids).last_hidden_state, ref) < 1e-5


def test_region_rejects_an_unfusable_activation():
    model = shflbw.compress_(_masked(_seq()), regions=False)
    with pytest.raises(ValueError, match="GELU"):
        ShflBWMLP(model[0], nn.Tanh(), model[2], ("0", "1", "2"))
