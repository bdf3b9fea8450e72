"""GPT-2's Conv1D layers (weights stored in x out) go through the whole model path as nn.Linear."""

import copy

import pytest
import torch

import shflbw
from shflbw.nn.masked import mask_of
from shflbw.testing import rel_error

transformers = pytest.importorskip("transformers")


def _gpt2(seed=0, layers=2):
    cfg = transformers.GPT2Config(n_layer=layers, n_embd=64, n_head=2, vocab_size=100, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return transformers.GPT2Model(cfg).eval()


def _conv1d_names(model):
    return [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]


def test_gpt2_prunes_compresses_saves_and_loads_through_its_conv1d_layers(tmp_path):
    dense = _gpt2()
    names = _conv1d_names(dense)
    assert len(names) == 8  # c_attn, c_proj, c_fc, c_proj in each of 2 blocks
    model = shflbw.sparsify_(copy.deepcopy(dense), shflbw.ShflBWConfig(sparsity=0.75, vector=16, time_budget=1),
                             progress=False)
    # the masked model is the dense GPT-2 with each Conv1D weight (in x out) masked by the transposed mask
    reference = copy.deepcopy(dense)
    with torch.no_grad():
        for n in names:
            p = mask_of(model.get_submodule(n))
            assert p is not None and p.mask.shape == reference.get_submodule(n).weight.t().shape
            reference.get_submodule(n).weight.mul_(p.mask.t())
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        want = reference(input_ids=ids).last_hidden_state
        assert rel_error(model(input_ids=ids).last_hidden_state, want) < 1e-6
        shflbw.compress_(model)
        assert all(isinstance(model.get_submodule(n), shflbw.ShflBWLinear) for n in names)
        assert rel_error(model(input_ids=ids).last_hidden_state, want) < 1e-5
        shflbw.save(model, str(tmp_path / "g"))
        loaded = shflbw.load(str(tmp_path / "g"), _gpt2(seed=1))  # a fresh GPT-2: Conv1D layers, other weights
        assert rel_error(loaded(input_ids=ids).last_hidden_state, want) < 1e-5


def test_filter_fn_judges_the_conv1d_once():
    model = _gpt2(layers=1)

    def only_qkv(mod, name):  # a filter written against the model's own classes
        return type(mod).__name__ == "Conv1D" and name.endswith("attn.c_attn")

    shflbw.sparsify_(model, shflbw.ShflBWConfig(sparsity=0.5, vector=16, time_budget=1), filter_fn=only_qkv,
                     progress=False)
    assert mask_of(model.h[0].attn.c_attn) is not None
    assert _conv1d_names(model) == ["h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.c_proj"]  # not chosen: untouched


def test_layer_types_without_linear_leave_gpt2_alone():
    model = _gpt2(layers=1)
    with pytest.raises(ValueError, match=r"selects no layer.*'h\.0\.attn\.c_attn \(linear\)'"):
        shflbw.sparsify_(model, shflbw.ShflBWConfig(layer_types=("conv2d",)), progress=False)
    assert len(_conv1d_names(model)) == 4


def test_prune_cli_on_a_gpt2_directory(tmp_path, capsys):
    from shflbw.cli import main
    from shflbw.prune_checkpoint import load_pruned

    _gpt2().save_pretrained(tmp_path / "gpt2")
    (tmp_path / "cfg.json").write_text('{"sparsity": 0.75, "vector": 16, "time_budget": 1}')
    assert main(["prune", str(tmp_path / "gpt2"), "--config", str(tmp_path / "cfg.json"), "-o", str(tmp_path / "o")]) == 0
    assert "pruned 8 layers" in capsys.readouterr().out
    model = load_pruned(str(tmp_path / "o"))
    assert isinstance(model.h[1].mlp.c_fc, shflbw.ShflBWLinear)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.randint(0, 100, (2, 5))).last_hidden_state).all()


def test_an_optimizer_built_before_sparsify_keeps_training_the_conv1d_weights():
    model = _gpt2(layers=1).train()
    c_fc = model.h[0].mlp.c_fc.weight  # (in, out), as GPT-2 stores it
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 100, (2, 7))
    model(input_ids=ids).last_hidden_state.square().mean().backward()
    opt.step()  # Adam now holds state shaped like the Conv1D weights
    opt.zero_grad()
    shflbw.sparsify_(model, shflbw.ShflBWConfig(sparsity=0.5, vector=16, time_budget=1), progress=False)
    lin = model.h[0].mlp.c_fc
    assert lin.parametrizations.weight.original is c_fc  # the same Parameter, in its own layout
    before = lin.weight.detach().clone()
    model(input_ids=ids).last_hidden_state.square().mean().backward()
    opt.step()
    after = lin.weight.detach()
    kept = mask_of(lin).mask
    assert not torch.equal(after[kept], before[kept]) and bool((after[~kept] == 0).all())


def test_oneshot_refit_lands_in_the_conv1d_weights():
    from shflbw.recover import oneshot_prune_

    model = _gpt2(layers=1)
    initial = {n: m.weight.detach().clone() for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    calib = [{"input_ids": torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(i))} for i in range(3)]
    oneshot_prune_(model, shflbw.ShflBWConfig(sparsity=0.5, vector=16, time_budget=1), calib, progress=False)
    for name, w0 in initial.items():
        lin = model.get_submodule(name)
        stored = lin.parametrizations.weight.original  # the Conv1D's Parameter, (in, out)
        assert stored.shape == w0.shape and not torch.equal(stored, w0)  # the refit was written there
        assert torch.equal(lin.weight, stored.t() * mask_of(lin).mask)  # and is what the layer computes with
