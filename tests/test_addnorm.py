"""Transformer sublayer tails: LayerNorm(dense(x) + residual) with a feature-major result."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shflbw
from shflbw.nn.addnorm import ShflBWAddNorm
from shflbw.nn.regions import unfuse_regions_
from shflbw.testing import random_shflbw_mask, rel_error

from conftest import KERNEL_TOLERANCE, RecordOps, masked_tiny_bert

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("f,t", [(96, 70), (130, 5), (64, 64)])
@pytest.mark.parametrize("layouts", ["tm-tm", "fm-tm", "tm-none"])
@pytest.mark.parametrize("one_pass,stages", [(False, 1), (False, 3), (True, 1)], ids=["walk", "walk-pipelined", "one-pass"])
def test_add_layernorm_kernel(f, t, layouts, one_pass, stages, nan_poison):
    # any input layout, tails past both tile edges; the result is feature-major
    pytest.importorskip("triton")
    from shflbw.kernels.addnorm import add_layernorm_fm
    from shflbw.kernels.configs import AddNormConfig

    g = torch.Generator().manual_seed(f + t)
    h, r = torch.randn(t, f, generator=g) * 3 + 1, torch.randn(t, f, generator=g)
    w, b = torch.randn(f, generator=g), torch.randn(f, generator=g)
    hv = h.t().contiguous() if layouts.startswith("fm") else h.t()
    rv = None if layouts.endswith("none") else r.t()
    cfg = AddNormConfig(one_pass=one_pass, block_f=32, block_t=16, num_warps=4, num_stages=stages)
    out = add_layernorm_fm(hv.to(DEVICE), None if rv is None else rv.to(DEVICE), w.to(DEVICE), b.to(DEVICE), 1e-5,
                           cfg).cpu()
    ref = F.layer_norm(h.double() + (0 if rv is None else r.double()), (f,), w.double(), b.double(), 1e-5)
    assert out.shape == (f, t) and out.is_contiguous()
    assert rel_error(out.t(), ref) < KERNEL_TOLERANCE[torch.float32]


@pytest.mark.parametrize("one_pass", [False, True], ids=["walk", "one-pass"])
def test_add_layernorm_kernel_large_mean(one_pass, nan_poison):
    # rows far from zero (mean 100, std 1): a float32 E[x^2] - E[x]^2 would miss the variance by up
    # to 0.4 % here; the walk sums around each token's first feature instead
    pytest.importorskip("triton")
    from shflbw.kernels.addnorm import add_layernorm_fm
    from shflbw.kernels.configs import AddNormConfig

    g = torch.Generator().manual_seed(7)
    h = torch.randn(100, 40, generator=g) + 100
    w, b = torch.randn(100, generator=g), torch.randn(100, generator=g)
    cfg = AddNormConfig(one_pass=one_pass, block_f=32, block_t=16, num_warps=4)
    out = add_layernorm_fm(h.to(DEVICE), None, w.to(DEVICE), b.to(DEVICE), 1e-5, cfg).cpu()
    ref = F.layer_norm(h.t().double(), (100,), w.double(), b.double(), 1e-5)
    assert rel_error(out.t(), ref) < KERNEL_TOLERANCE[torch.float32]


def _packed_linear(m, k, v=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, k, generator=g).to(dtype)
    mask, perm = random_shflbw_mask(m, k, v, 0.4, generator=g)
    bias = torch.randn(m, generator=g).to(dtype)
    return shflbw.ShflBWLinear(shflbw.ShflBWMatrix.from_dense(w, mask, perm, vector=v), bias), w * mask, bias


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("tokens", [5, 40])  # the decode path and the feature-major SpMM
@pytest.mark.parametrize("residual_layout", ["token-major", "feature-major"])  # the latter: added in the SpMM epilogue
def test_linear_add_layernorm_op(backend, tokens, residual_layout, nan_poison):
    if backend == "triton":
        pytest.importorskip("triton")
    lin, wm, bias = _packed_linear(48, 32)
    norm = nn.LayerNorm(48)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x, r = torch.randn(2, tokens // 2 + 1, 32), torch.randn(2, tokens // 2 + 1, 48)
    if residual_layout == "feature-major":  # as the previous tail hands it on
        r = r.reshape(-1, 48).t().contiguous().t().reshape(r.shape)
    ref = F.layer_norm(F.linear(x.double(), wm.double(), bias.double()) + r.double(), (48,), norm.weight.double(),
                       norm.bias.double(), 1e-5)
    lin, norm = lin.to(DEVICE), norm.to(DEVICE)
    with shflbw.ops.backend(backend), torch.no_grad():
        out = torch.ops.shflbw.linear_add_layernorm(x.to(DEVICE), lin.values, lin.col_idx, lin.group_ptr, lin.perm,
                                                    lin.bias, r.to(DEVICE), norm.weight, norm.bias, 1e-5, 48)
    assert out.shape == ref.shape
    assert out.reshape(-1, 48).t().is_contiguous()  # a token-major view of a feature-major buffer
    assert rel_error(out.cpu(), ref) < KERNEL_TOLERANCE[torch.float32]


def test_addnorm_ops_registration():
    lin, _, _ = _packed_linear(32, 16)
    x, r = torch.randn(3, 16), torch.randn(3, 32)
    w, b = torch.randn(32), torch.randn(32)
    args = (x, lin.values, lin.col_idx, lin.group_ptr, lin.perm, lin.bias, r, w, b, 1e-5, 32)
    torch.library.opcheck(torch.ops.shflbw.linear_add_layernorm.default, args)
    torch.library.opcheck(torch.ops.shflbw.add_layernorm.default, (r, r * 2, w, b, 1e-5))
    g = torch.compile(lambda *a: torch.ops.shflbw.linear_add_layernorm(*a) + 1, fullgraph=True, backend="aot_eager")
    assert torch.allclose(g(*args), torch.ops.shflbw.linear_add_layernorm(*args) + 1)


def _bert(layers=2):
    return masked_tiny_bert(layers, layernorm_noise=True)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bert_tails_fused_and_equal_to_the_masked_model(backend, nan_poison):
    if backend == "triton":
        pytest.importorskip("triton")
    masked, _ = _bert()
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(1))  # 48 tokens: the SpMM path
    with torch.no_grad():
        ref = masked(input_ids=ids).last_hidden_state
    model = shflbw.compress_(copy.deepcopy(masked)).to(DEVICE)
    layer = model.encoder.layer[0]
    assert isinstance(layer.attention.output, ShflBWAddNorm) and isinstance(layer.output, ShflBWAddNorm)
    assert layer.intermediate.dense.feature_major_out
    assert "feature-major out" in repr(layer.output)
    assert not layer.intermediate.dense.training  # the eval model's mode (regions run their eval paths)
    with shflbw.ops.backend(backend), torch.no_grad(), RecordOps() as mode:
        out = model(input_ids=ids.to(DEVICE)).last_hidden_state.cpu()
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]
    assert all(mode.ops.count(f"shflbw.{op}.default") == 2 for op in ("linear_add_layernorm", "mlp", "add_layernorm"))


def test_bert_tails_run_under_compile():
    # what torch.compile traces: per layer the attention region, both tails and the MLP block
    masked, _ = _bert()
    model = shflbw.compress_(copy.deepcopy(masked))
    traced = []

    def record(gm, example_inputs):
        traced.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "shflbw" in str(n.target))
        return gm.forward

    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = torch.compile(model, backend=record, fullgraph=True)(input_ids=ids).last_hidden_state
        ref = masked(input_ids=ids).last_hidden_state
    assert all(traced.count(f"shflbw.{op}.default") == 2
               for op in ("qkv_attention", "linear_add_layernorm", "mlp", "add_layernorm"))
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]



def test_bert_tails_training_mode_unfuse_and_save_load(tmp_path):
    masked, transformers = _bert()
    model = shflbw.compress_(copy.deepcopy(masked))
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = masked(input_ids=ids).last_hidden_state
        assert rel_error(model(input_ids=ids).last_hidden_state, ref) < 1e-5
    model.train()
    assert isinstance(model.encoder.layer[1].attention.output, ShflBWAddNorm)
    model.eval()
    shflbw.save(model, str(tmp_path / "bert"))
    assert isinstance(model.encoder.layer[0].output, ShflBWAddNorm)  # fused again after the write
    skeleton = transformers.BertModel(masked.config).eval()
    loaded = shflbw.load(str(tmp_path / "bert"), skeleton)
    assert isinstance(loaded.encoder.layer[1].output, ShflBWAddNorm)
    with torch.no_grad():
        assert rel_error(loaded(input_ids=ids).last_hidden_state, ref) < 1e-5
    assert unfuse_regions_(model) == 2 + 4 + 2  # two MLP regions, four tails, two attention regions
    assert not any(isinstance(m, ShflBWAddNorm) for m in model.modules())
    assert type(model.encoder.layer[0].output).__name__ == "BertOutput"
    back = shflbw.decompress_(model)
    with torch.no_grad():
        assert rel_error(back(input_ids=ids).last_hidden_state, ref) < 1e-5


class NotATail(nn.Module):
    """An 'Output' module with the right attributes whose forward skips the residual: never fused."""

    def __init__(self, lin):
        super().__init__()
        self.dense, self.LayerNorm, self.dropout = lin, nn.LayerNorm(lin.out_features), nn.Dropout(0.0)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states))


NotATail.__name__ = "WeirdOutput"


def test_a_module_with_another_forward_is_left_alone():
    from shflbw.nn.addnorm import fuse_addnorm_regions_

    lin, _, _ = _packed_linear(48, 32)
    model = nn.Sequential(NotATail(lin))
    assert fuse_addnorm_regions_(model) == []
    assert isinstance(model[0], NotATail)


def test_addnorm_config_rule():
    from shflbw.kernels.configs import addnorm_config

    with_res, alone = addnorm_config(1024), addnorm_config(1024, residual=False)
    assert with_res.one_pass and (with_res.block_t, with_res.num_warps) == (32, 8)
    assert alone.one_pass and (alone.block_t, alone.num_warps) == (16, 4)
    assert addnorm_config(384).one_pass and addnorm_config(384).block_t == 16
    wide = addnorm_config(4096)
    assert not wide.one_pass and wide.num_stages > 1


def test_roberta_tails_are_fused_too():
    # the same HF "Output" structure under other names (RobertaSelfOutput / RobertaOutput)
    transformers = pytest.importorskip("transformers")
    cfg = transformers.RobertaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                     num_attention_heads=2, max_position_embeddings=40)
    torch.manual_seed(0)
    masked = shflbw.sparsify_(transformers.RobertaModel(cfg).eval(),
                              shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("encoder.*",), exclude=(),
                                                  time_budget=0.5), progress=False)
    ids = torch.randint(3, 100, (2, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = masked(input_ids=ids).last_hidden_state
    model = shflbw.compress_(copy.deepcopy(masked))
    layer = model.encoder.layer[0]
    assert isinstance(layer.attention.output, ShflBWAddNorm) and isinstance(layer.output, ShflBWAddNorm)
    with torch.no_grad():
        assert rel_error(model(input_ids=ids).last_hidden_state, ref) < 1e-5


def test_linear_fwd_residual_only_on_the_feature_major_roundtrip():
    # the epilogue residual is a feature-major [M, T] tensor: refused where the result is token-major
    # or comes from the decode kernel, instead of being dropped
    pytest.importorskip("triton")
    from shflbw.kernels.linear import linear_fwd

    lin, wm, bias = _packed_linear(48, 32)
    x = torch.randn(40, 32)
    r = torch.randn(48, 40)
    args = (x, lin.values, lin.col_idx, lin.group_ptr, lin.perm, lin.bias, 48)
    out = linear_fwd(*args, feature_major_out=True, residual=r)
    assert rel_error(out, F.linear(x, wm, bias) + r.t()) < KERNEL_TOLERANCE[torch.float32]
    with pytest.raises(ValueError, match="roundtrip"):
        linear_fwd(*args, residual=r)
    with pytest.raises(ValueError, match="roundtrip"):
        linear_fwd(x[:5], *args[1:], feature_major_out=True, residual=r[:, :5])
