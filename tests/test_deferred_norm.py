"""The deferred LayerNorm: the attention tail hands on s and its statistics (ops/deferred_norm.py)."""

import copy

import pytest
import torch
import torch.nn.functional as F

import shflbw
from shflbw.nn.deferred_norm import link_deferred_norms_, unlink_deferred_norms_
from shflbw.nn.regions import unfuse_regions_
from shflbw.ops.deferred_norm import fill_pending, fold_gain, normalized, split_pending, stats_rows
from shflbw.ops.mlp import ACTIVATIONS, PackedMLP
from shflbw.testing import random_shflbw_mask, rel_error

from conftest import KERNEL_TOLERANCE, RecordOps, masked_tiny_bert

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["reference", "triton"]


def _packed(m, k, v=16, seed=0, dtype=torch.float32, bias=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, k, generator=g) / k**0.5
    mask, perm = random_shflbw_mask(m, k, v, 0.4, generator=g)
    w = w.to(dtype)
    b = torch.randn(m, generator=g).to(dtype) if bias else None
    return shflbw.ShflBWMatrix.from_dense(w, mask, perm, vector=v), (w * mask).double(), b


def _ln_params(m, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 1 + 0.3 * torch.randn(m, generator=g), 0.3 * torch.randn(m, generator=g)


def _pending(t, m, dtype, seed=2, offset=0.5):
    # token rows with a non-zero mean: the fold's mean * rowsum(W') term must be right
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(t, m, generator=g) * 2 + offset).to(dtype)
    return fill_pending(h.to(DEVICE)), h


def test_pending_layout_and_its_errors():
    x, h = _pending(6, 32, torch.bfloat16)
    assert x.shape == (6, 32 + stats_rows(torch.bfloat16)) and stats_rows(torch.float32) == 2
    s, stats = split_pending(x, 32)
    assert torch.equal(s.t().cpu(), h)
    q = h.float()
    assert torch.allclose(stats.cpu(), torch.stack([q.sum(1), (q * q).sum(1)]), rtol=1e-6, atol=1e-4)
    want = F.layer_norm(h.double(), (32,), eps=1e-5)
    assert rel_error(normalized(x, 32, 1e-5).cpu(), want) < 1e-2
    with pytest.raises(ValueError, match="untouched view"):
        split_pending(x.contiguous(), 32)  # a token-major copy loses the layout
    with pytest.raises(ValueError, match="untouched view"):
        split_pending(x[1:], 32)  # a slice of its tokens too
    with pytest.raises(ValueError, match="has 34 columns, got 36"):
        split_pending(x, 30)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens", [5, 40])  # fallback (few tokens) and the SpMM with statistics in its epilogue
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["feature-major", "token-major"])  # a tail's output; the embeddings
def test_linear_add_stats(backend, tokens, dtype, layout, nan_poison):
    w, wm, b = _packed(48, 32, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(tokens, 32, generator=g).to(dtype)
    r = (torch.randn(tokens, 48, generator=g) + 1).to(dtype)
    res = r.t().contiguous().t() if layout == "feature-major" else r
    want = F.linear(x.double(), wm, b.double()) + r.double()
    w = w.to(DEVICE)
    with shflbw.ops.backend(backend), torch.no_grad():
        out = torch.ops.shflbw.linear_add_stats(x.to(DEVICE), w.values, w.col_idx, w.group_ptr, w.perm, b.to(DEVICE),
                                                res.to(DEVICE), 48)
    s, stats = split_pending(out, 48)
    assert rel_error(s.t().cpu(), want) < KERNEL_TOLERANCE[dtype]
    q = s.t().cpu().double()  # the statistics are of the values as stored
    assert rel_error(stats.cpu(), torch.stack([q.sum(1), (q * q).sum(1)])) < 1e-5
    assert rel_error(normalized(out, 48, 1e-5).cpu(), F.layer_norm(want, (48,), eps=1e-5)) < KERNEL_TOLERANCE[dtype]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens", [5, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mlp_reads_a_pending_input(backend, tokens, dtype, nan_poison):
    w1, wm1, b1 = _packed(64, 32, dtype=dtype)
    w2, wm2, b2 = _packed(32, 64, seed=4, dtype=dtype)
    gain, shift = _ln_params(32)
    x, h = _pending(tokens, 32, dtype)
    ln = F.layer_norm(h.double(), (32,), gain.double(), shift.double(), 1e-5)
    want = F.linear(F.gelu(F.linear(ln, wm1, b1.double())), wm2, b2.double())
    block = PackedMLP(w1, w2, b1, b2, "gelu")
    values, c, bias = fold_gain(w1.values, w1.col_idx, w1.group_ptr, block.bias1_grouped, gain, shift)
    with shflbw.ops.backend(backend), torch.no_grad():
        out = torch.ops.shflbw.mlp(x, values.to(DEVICE), w1.col_idx.to(DEVICE), w1.group_ptr.to(DEVICE),
                                   w1.perm.to(DEVICE), bias.to(DEVICE), block.values2.to(DEVICE),
                                   block.col_idx2.to(DEVICE), w2.group_ptr.to(DEVICE), w2.perm.to(DEVICE),
                                   block.bias2.to(DEVICE), 32, ACTIVATIONS["gelu"], False, c.to(DEVICE), 1e-5)
    # bf16: the folded weights and the un-normalised s each round once more than the plain path
    assert rel_error(out.cpu(), want) < 2 * KERNEL_TOLERANCE[dtype]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_layernorm_finishes_a_pending_residual(backend, dtype, nan_poison):
    gain, shift = _ln_params(48)
    w2, b2 = _ln_params(48, seed=5)
    x, h = _pending(40, 48, dtype)
    y = torch.randn(40, 48, generator=torch.Generator().manual_seed(6)).to(dtype)
    ln1 = F.layer_norm(h.double(), (48,), gain.double(), shift.double(), 1e-5)
    want = F.layer_norm(y.double() + ln1, (48,), w2.double(), b2.double(), 1e-5)
    d = lambda t: t.to(DEVICE)  # noqa: E731
    with shflbw.ops.backend(backend), torch.no_grad():
        out = torch.ops.shflbw.add_layernorm(d(y), x, d(w2).to(dtype), d(b2).to(dtype), 1e-5, d(gain).to(dtype),
                                             d(shift).to(dtype), 1e-5)
    assert rel_error(out.cpu(), want) < KERNEL_TOLERANCE[dtype]


def test_deferred_ops_registration():
    w, _, b = _packed(32, 16)
    x, r = torch.randn(3, 16), torch.randn(3, 32)
    torch.library.opcheck(torch.ops.shflbw.linear_add_stats.default, (x, w.values, w.col_idx, w.group_ptr, w.perm, b,
                                                                        r, 32))
    p, _ = _pending(3, 32, torch.float32)
    gain, shift = _ln_params(32)
    torch.library.opcheck(torch.ops.shflbw.add_layernorm.default, (r, p.cpu(), gain, shift, 1e-5, gain, shift, 1e-5))


def _bert(layers=2):
    return masked_tiny_bert(layers, layernorm_noise=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bert_layers_are_linked_and_equal_to_the_masked_model(dtype):
    masked, _ = _bert()
    masked = masked.to(dtype)
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = masked.float()(input_ids=ids).last_hidden_state
    model = shflbw.compress_(copy.deepcopy(masked).to(dtype), defer_layernorm=True).to(DEVICE)
    layer = model.encoder.layer[1]
    assert layer.attention.output.defer and layer.output.residual_norm_eps is not None
    assert "deferred" in repr(layer.attention.output) and "deferred" in repr(layer.intermediate.dense)
    for backend in BACKENDS:
        with shflbw.ops.backend(backend), torch.no_grad(), RecordOps() as mode:
            out = model(input_ids=ids.to(DEVICE)).last_hidden_state.float().cpu()
        assert rel_error(out, ref) < KERNEL_TOLERANCE[dtype], backend
        assert mode.ops.count("shflbw.linear_add_stats.default") == 2, backend
    assert unlink_deferred_norms_(model) == 2 and not layer.attention.output.defer
    assert "deferred" not in repr(layer.intermediate.dense)
    assert link_deferred_norms_(model) == ["encoder.layer.0", "encoder.layer.1"]


def test_bert_linked_layers_compile_and_switch_modes(tmp_path):
    masked, transformers = _bert()
    assert not shflbw.compress_(copy.deepcopy(masked)).encoder.layer[0].attention.output.defer  # opt-in
    model = shflbw.compress_(copy.deepcopy(masked), defer_layernorm=True)
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(2))
    traced = []

    def record(gm, example_inputs):
        traced.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "shflbw" in str(n.target))
        return gm.forward

    with torch.no_grad():
        ref = masked(input_ids=ids).last_hidden_state
        out = torch.compile(model, backend=record, fullgraph=True)(input_ids=ids).last_hidden_state
    assert traced.count("shflbw.linear_add_stats.default") == 2 and "shflbw.linear_add_layernorm.default" not in traced
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]
    # the producer in eval mode, the MLP tail in training mode: the tail finishes the norm itself
    model.encoder.layer[0].output.train()
    model.encoder.layer[0].output.original.dropout.eval()  # its training path, without dropout's noise
    with torch.no_grad():
        assert rel_error(model(input_ids=ids).last_hidden_state, ref) < KERNEL_TOLERANCE[torch.float32]
    model.eval()
    shflbw.save(model, str(tmp_path / "bert"))
    assert model.encoder.layer[0].attention.output.defer  # linked again after the write
    loaded = shflbw.load(str(tmp_path / "bert"), transformers.BertModel(masked.config).eval())
    assert loaded.encoder.layer[1].attention.output.defer
    with torch.no_grad():
        assert rel_error(loaded(input_ids=ids).last_hidden_state, ref) < KERNEL_TOLERANCE[torch.float32]
    assert unfuse_regions_(model) == 2 + 4 + 2
    back = shflbw.decompress_(model)
    with torch.no_grad():
        assert rel_error(back(input_ids=ids).last_hidden_state, ref) < 1e-5


def test_layers_that_cannot_take_a_pending_tensor_stay_unlinked():
    masked, transformers = _bert()
    model = shflbw.compress_(copy.deepcopy(masked), regions=False)
    model.encoder.layer[0].chunk_size_feed_forward = 4  # chunks would slice the pending tensor's tokens
    layer1 = model.encoder.layer[1]

    def reads_the_attention_output_itself(hidden_states, *args, **kwargs):
        a = layer1.attention(hidden_states)[0]
        out = layer1.output(layer1.intermediate(a), a) + a
        return out if int(transformers.__version__.split(".")[0]) >= 5 else (out,)  # what BertLayer returns

    layer1.forward = reads_the_attention_output_itself  # a layer whose data flow differs from BERT's
    from shflbw.nn.regions import fuse_regions_

    fuse_regions_(model, defer_layernorm=True)
    assert not model.encoder.layer[0].attention.output.defer
    assert not layer1.attention.output.defer and layer1.output.residual_norm_eps is None
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(input_ids=ids)  # runs: nothing half-linked
