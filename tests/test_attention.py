"""Self-attention on feature-major Q, K, V: the kernel, the op, and the BERT-style region."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shflbw
from shflbw.nn.attention import ShflBWSelfAttention, fuse_attention_regions_
from shflbw.nn.regions import unfuse_regions_
from shflbw.testing import random_shflbw_mask, rel_error

from conftest import KERNEL_TOLERANCE, masked_tiny_bert

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _sdpa_fm(qkv, b, s, h, scale):
    """The reference: PyTorch attention in float64 on the three row blocks, context feature-major."""
    m = qkv.shape[0] // 3
    q, k, v = (qkv[i * m:(i + 1) * m].double().t().reshape(b, s, h, -1).transpose(1, 2) for i in range(3))
    return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).reshape(b * s, m).t()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b,s,h,d,bm,bn", [(2, 37, 3, 16, 16, 16), (1, 5, 2, 32, 16, 16), (3, 70, 2, 16, 32, 16),
                                           (2, 64, 1, 64, None, None)])
def test_attention_kernel_matches_sdpa(dtype, b, s, h, d, bm, bn, nan_poison):
    # sequence tails in both block sizes, several key blocks (online softmax), a strided qkv view
    pytest.importorskip("triton")
    from shflbw.kernels.attention import attention_fm

    g = torch.Generator().manual_seed(s + d)
    big = (torch.randn(3 * h * d + 5, b * s, generator=g) * 2).to(dtype).to(DEVICE)
    qkv = big[5:]  # rows start past the base pointer
    out = attention_fm(qkv, b, s, h, 0.3, block_m=bm, block_n=bn)
    assert out.shape == (h * d, b * s) and out.is_contiguous()
    assert rel_error(out.cpu(), _sdpa_fm(qkv.cpu(), b, s, h, 0.3)) < KERNEL_TOLERANCE[dtype]


@pytest.mark.parametrize("kind", ["bool-padding", "bool-full", "float-per-head", "bool-masked-row"])
def test_attention_kernel_masks(kind, nan_poison):
    # Hugging Face's padding mask (boolean [B, 1, S, S]), a broadcast [B, 1, 1, S] one, an additive
    # per-head float mask, and a query row with no key left (SDPA gives zeros there)
    pytest.importorskip("triton")
    from shflbw.kernels.attention import attention_fm

    b, s, h, d = 2, 37, 3, 16
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(3 * h * d, b * s, generator=g)
    pad = torch.ones(b, s, dtype=torch.bool)
    pad[1, 30:] = False
    if kind == "bool-padding":
        mask = pad[:, None, None, :].expand(b, 1, s, s).contiguous()
    elif kind == "bool-full":
        mask = pad[:, None, None, :]
    elif kind == "float-per-head":
        mask = torch.randn(b, h, s, s, generator=g)
        mask[1, :, :, 30:] = float("-inf")
    else:
        mask = torch.ones(b, 1, s, s, dtype=torch.bool)
        mask[0, 0, 3, :] = False
    out = attention_fm(qkv.to(DEVICE), b, s, h, 0.3, mask=mask.to(DEVICE), block_m=16, block_n=16).cpu()
    m = qkv.shape[0] // 3
    q, k, v = (qkv[i * m:(i + 1) * m].double().t().reshape(b, s, h, -1).transpose(1, 2) for i in range(3))
    ref_mask = mask if mask.dtype == torch.bool else mask.double()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=ref_mask, scale=0.3).transpose(1, 2).reshape(b * s, m).t()
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]
    if kind == "bool-masked-row":
        assert out[:, 3].abs().max() == 0


def test_attention_kernel_rejects_bad_shapes():
    pytest.importorskip("triton")
    from shflbw.kernels.attention import attention_fm

    with pytest.raises(ValueError, match="batch \\* seq"):
        attention_fm(torch.randn(96, 10), 2, 6, 2, 1.0)
    with pytest.raises(ValueError, match="power of two"):
        attention_fm(torch.randn(3 * 2 * 24, 10), 2, 5, 2, 1.0)
    with pytest.raises(ValueError, match="contiguous along tokens"):
        attention_fm(torch.randn(10, 96).t(), 2, 5, 2, 1.0)
    with pytest.raises(ValueError, match="attention mask must be"):
        attention_fm(torch.randn(96, 10), 2, 5, 2, 1.0, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean or floating"):
        attention_fm(torch.randn(96, 10), 2, 5, 2, 1.0, mask=torch.ones(2, 1, 5, 5, dtype=torch.long))


def _packs(k=32, m=32, v=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    out, dense = [], []
    for i in range(3):
        w = torch.randn(m, k, generator=g)
        mask, perm = random_shflbw_mask(m, k, v, 0.4, generator=g)
        p = shflbw.ShflBWMatrix.from_dense(w, mask, perm, vector=v)
        bias = torch.randn(m, generator=g)
        out.append((p, bias))
        dense.append((w * mask, bias))
    stacked = shflbw.ShflBWMatrix.stack_rows([p for p, _ in out])  # Q, K, V: one packed matrix
    return [stacked.values, stacked.col_idx, stacked.group_ptr, stacked.perm, torch.cat([b for _, b in out])], dense


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_qkv_attention_op(backend, nan_poison):
    if backend == "triton":
        pytest.importorskip("triton")
    packs, dense = _packs()
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(4))
    q, k, v = (F.linear(x.double(), w.double(), bias.double()).view(2, 9, 2, 16).transpose(1, 2) for w, bias in dense)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.25).transpose(1, 2).reshape(2, 9, 32)
    with shflbw.ops.backend(backend):
        out = torch.ops.shflbw.qkv_attention(x.to(DEVICE), *[t.to(DEVICE) for t in packs], None, 2, 0.25, 32)
    assert out.shape == (2, 9, 32)
    assert out.reshape(-1, 32).t().is_contiguous()  # a token-major view of a feature-major buffer
    assert rel_error(out.cpu(), ref) < KERNEL_TOLERANCE[torch.float32]


def test_qkv_attention_op_registration():
    packs, _ = _packs()
    x = torch.randn(2, 3, 32)
    args = (x, *packs, None, 2, 0.25, 32)
    torch.library.opcheck(torch.ops.shflbw.qkv_attention.default, args)
    torch.library.opcheck(torch.ops.shflbw.qkv_attention.default, (x, *packs, torch.rand(2, 1, 3, 3) > 0.3, 2, 0.25, 32))
    g = torch.compile(lambda *a: torch.ops.shflbw.qkv_attention(*a) + 1, fullgraph=True, backend="aot_eager")
    assert torch.allclose(g(*args), torch.ops.shflbw.qkv_attention(*args) + 1)


def _bert(layers=2):
    return masked_tiny_bert(layers)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bert_attention_fused_and_equal_to_the_masked_model(backend, nan_poison):
    if backend == "triton":
        pytest.importorskip("triton")
    masked, _ = _bert()
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = masked(input_ids=ids).last_hidden_state
    model = shflbw.compress_(copy.deepcopy(masked)).to(DEVICE)
    region = model.encoder.layer[0].attention.self
    assert isinstance(region, ShflBWSelfAttention) and "2 heads" in repr(region)
    with shflbw.ops.backend(backend), torch.no_grad():
        out = model(input_ids=ids.to(DEVICE)).last_hidden_state.cpu()
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]


def test_region_holds_qkv_once_and_follows_in_place_changes():
    # the stacked Q/K/V pack shares the three layers' values and biases: no second copy of the
    # weights, and an in-place change (load_state_dict copies in place) reaches the region
    masked, _ = _bert(layers=1)
    model = shflbw.compress_(copy.deepcopy(masked))
    region = model.encoder.layer[0].attention.self
    q, v = region.original.query, region.original.value
    assert q.values.untyped_storage().data_ptr() == region.qkv_values.untyped_storage().data_ptr()
    assert not any(k.endswith("qkv_values") for k in model.state_dict())  # derived: not saved
    with torch.no_grad():
        q.values.mul_(2.0)
        v.bias.add_(0.5)
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(3))
    with shflbw.ops.backend("reference"), torch.no_grad():
        assert rel_error(region(x)[0], region.original(x)[0]) < 1e-5
    # a dtype conversion converts the stacked pack and the layers apart: they are shared again after
    model.double()
    for m in (q, region.original.key, v):
        assert m.values.dtype == torch.float64
        assert m.values.untyped_storage().data_ptr() == region.qkv_values.untyped_storage().data_ptr()
        assert m.bias.untyped_storage().data_ptr() == region.qkv_bias.untyped_storage().data_ptr()
    with shflbw.ops.backend("reference"), torch.no_grad():
        assert rel_error(region(x.double())[0], region.original(x.double())[0]) < 1e-5


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bert_attention_with_a_padding_mask(backend, nan_poison):
    # Hugging Face hands a boolean [B, 1, S, S] mask to the attention when tokens are padded
    if backend == "triton":
        pytest.importorskip("triton")
    masked, _ = _bert(layers=1)
    model = shflbw.compress_(copy.deepcopy(masked)).to(DEVICE)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(2))
    pad = torch.ones(2, 12, dtype=torch.long)
    pad[1, 8:] = 0
    with torch.no_grad():
        ref = masked(input_ids=ids, attention_mask=pad).last_hidden_state
    calls = []
    model.encoder.layer[0].attention.self.original.register_forward_hook(lambda *a: calls.append(1))
    with shflbw.ops.backend(backend), torch.no_grad():
        out = model(input_ids=ids.to(DEVICE), attention_mask=pad.to(DEVICE)).last_hidden_state.cpu()
    assert calls == []  # the region ran, not the original module
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]


def test_bert_attention_falls_back_in_training_mode_and_for_other_calls():
    masked, _ = _bert(layers=1)
    region = shflbw.compress_(copy.deepcopy(masked)).encoder.layer[0].attention.self
    calls = []
    region.original.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 12, 64)
    region.train()
    region(x)
    region.eval()
    region(x, output_attentions=True)
    assert calls == [1, 1]
    region(x)
    region(x, attention_mask=torch.zeros(2, 1, 12, 12))
    assert calls == [1, 1]


def test_masks_the_kernel_takes():
    from shflbw.nn.attention import _usable_mask

    x = torch.randn(2, 12, 64)
    assert _usable_mask(None, x, 4)
    assert _usable_mask(torch.ones(2, 1, 12, 12, dtype=torch.bool), x, 4)
    assert _usable_mask(torch.zeros(1, 4, 1, 12), x, 4)
    assert not _usable_mask(torch.ones(2, 12, dtype=torch.bool), x, 4)  # 2-D: not yet expanded by the model
    assert not _usable_mask(torch.ones(2, 3, 12, 12, dtype=torch.bool), x, 4)  # heads mismatch
    assert not _usable_mask(torch.ones(2, 1, 12, 12, dtype=torch.long), x, 4)


def test_unfuse_and_save_load_keep_the_attention_region(tmp_path):
    masked, transformers = _bert(layers=1)
    model = shflbw.compress_(copy.deepcopy(masked))
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = masked(input_ids=ids).last_hidden_state
    shflbw.save(model, str(tmp_path / "bert"))
    loaded = shflbw.load(str(tmp_path / "bert"), transformers.BertModel(masked.config).eval())
    assert isinstance(loaded.encoder.layer[0].attention.self, ShflBWSelfAttention)
    with torch.no_grad():
        assert rel_error(loaded(input_ids=ids).last_hidden_state, ref) < 1e-5
    unfuse_regions_(model)
    assert type(model.encoder.layer[0].attention.self).__name__ == "BertSelfAttention"


class NotAnAttention(nn.Module):
    """A "SelfAttention" with compressed q/k/v whose forward is no softmax attention: never fused."""

    def __init__(self, packs):
        super().__init__()
        self.query, self.key, self.value = packs
        self.num_attention_heads = 2

    def forward(self, hidden_states, attention_mask=None):
        return (self.query(hidden_states) + self.value(hidden_states), None)


NotAnAttention.__name__ = "OddSelfAttention"


def _linears(rows, seed):
    """Three compressed 32-input linears of ``rows`` outputs (V = 16)."""
    g = torch.Generator().manual_seed(seed)
    lins = []
    for _ in range(3):
        mask, perm = random_shflbw_mask(rows, 32, 16, 0.5, generator=g)
        lins.append(shflbw.ShflBWLinear(shflbw.ShflBWMatrix.from_dense(torch.randn(rows, 32, generator=g), mask, perm,
                                                                       vector=16)))
    return lins


def test_a_module_with_another_forward_is_left_alone():
    model = nn.Sequential(NotAnAttention(_linears(32, seed=0)))
    assert fuse_attention_regions_(model) == []
    assert isinstance(model[0], NotAnAttention)


def test_compressed_bert_compiles_in_one_graph():
    # torch.compile(fullgraph=True) through the attention region, with and without a padding mask
    masked, _ = _bert(layers=1)
    model = shflbw.compress_(copy.deepcopy(masked))
    assert isinstance(model.encoder.layer[0].attention.self, ShflBWSelfAttention)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(2))
    pad = torch.ones(2, 12, dtype=torch.long)
    pad[1, 9:] = 0
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": pad}):
            ref = masked(input_ids=ids, **kwargs).last_hidden_state
            assert rel_error(compiled(input_ids=ids, **kwargs).last_hidden_state, ref) < 1e-5


def test_head_sizes_the_kernel_cannot_tile_take_the_reference_path(nan_poison):
    # 2 heads of 24 features: not a power of two, so even with the Triton backend forced the op
    # computes on the reference path instead of failing in the kernel
    packs, dense = _packs(m=48)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(6))
    q, k, v = (F.linear(x.double(), w.double(), bias.double()).view(2, 5, 2, 24).transpose(1, 2) for w, bias in dense)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.2).transpose(1, 2).reshape(2, 5, 48)
    with shflbw.ops.backend("triton"):
        out = torch.ops.shflbw.qkv_attention(x, *packs, None, 2, 0.2, 48)
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]


def test_projections_that_do_not_stack_are_not_fused():
    # 40 rows in groups of 16: Q's last group is padded, so K's rows cannot follow it in one pack;
    # the region refuses (ValueError) and fuse_attention_regions_ leaves the module alone
    module = NotAnAttention(_linears(40, seed=1))
    with pytest.raises(ValueError, match="not a multiple of V"):
        ShflBWSelfAttention(module)
