import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Triton kernels run on CPU tensors under the interpreter; it must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Relative error (Frobenius) allowed against a float64 reference, per dtype: the output rounding
# alone is ~2^-9 (bf16), ~2^-12 (fp16), so these fail on any real indexing or accumulation bug.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# Triton's fp32 dot on a GPU may use tf32 (~3e-4); kernels ask for ieee, the interpreter is exact.
KERNEL_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.fixture
def nan_poison(monkeypatch):
    """Make torch.empty / empty_like return NaN-filled float tensors so a forgotten write fails loudly."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.dtype.is_floating_point:
            t.fill_(float("nan"))
        return t

    def empty_like(*args, **kwargs):
        t = real_empty_like(*args, **kwargs)
        if t.dtype.is_floating_point:
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "requires_gpu" in item.keywords:
            item.add_marker(skip)


def masked_tiny_bert(layers: int = 2, layernorm_noise: bool = False):
    """A 64-wide, 2-head Hugging Face BertModel in masked mode (75 %, V = 16, every encoder Linear),
    and the transformers module; ``layernorm_noise`` moves the LayerNorm parameters away from (1, 0)
    so a wrong fold shows."""
    import shflbw
    from torch import nn

    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                  num_attention_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    if layernorm_noise:
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, 0.3)
                nn.init.normal_(m.bias, 0.0, 0.3)
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("encoder.*",), exclude=(), time_budget=2)
    return shflbw.sparsify_(model, cfg, progress=False), transformers


class RecordOps(TorchDispatchMode):
    """Records the name of every op dispatched while active (``mode.ops``)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))
