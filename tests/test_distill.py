import copy

import pytest
import torch
from torch import nn

import shflbw
from shflbw.nn.masked import mask_of
from shflbw.recover import DistillConfig, distill_
from shflbw.recover.distill import distill_loss


def _teacher(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 32))


def _data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 32, generator=g) for _ in range(n)]


def _student(teacher):
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("*",), exclude=(), time_budget=2)
    return shflbw.sparsify_(copy.deepcopy(teacher), cfg, progress=False)


def test_distillation_lowers_the_gap_and_keeps_the_masks():
    teacher = _teacher()
    student = _student(teacher)
    masks = {n: mask_of(m).mask.clone() for n, m in student.named_modules() if mask_of(m) is not None}
    held_out = torch.randn(256, 32, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = float(distill_loss((student(held_out),), (teacher(held_out),), None, 1.0))
    history = distill_(student, teacher, _data(), DistillConfig(steps=150, lr=3e-3, warmup=10, hidden="last"), progress=False)
    with torch.no_grad():
        after = float(distill_loss((student(held_out),), (teacher(held_out),), None, 1.0))
    assert len(history) == 150
    assert after < 0.5 * before, (before, after)
    for n, m in student.named_modules():
        if mask_of(m) is not None:
            assert torch.equal(mask_of(m).mask, masks[n])  # masks held fixed
            assert bool((m.weight[~masks[n]] == 0).all())  # pruned weights stay pruned
    # the teacher is untouched and the result still packs
    assert all(mask_of(m) is None for m in teacher.modules())
    shflbw.compress_(student)
    assert isinstance(student[0], shflbw.ShflBWMLP) and isinstance(student[4], shflbw.ShflBWLinear)


def test_time_budget_stops_early():
    teacher = _teacher()
    student = _student(teacher)
    history = distill_(student, teacher, _data(2), DistillConfig(steps=10_000, time_budget=0.5, hidden="last"),
                       progress=False)
    assert 0 < len(history) < 10_000


def test_hugging_face_model_all_hidden_states():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    teacher = transformers.BertModel(cfg).eval()
    student = shflbw.sparsify_(copy.deepcopy(teacher), shflbw.ShflBWConfig(sparsity=0.5, vector=16,
                                                                           include=("encoder.*",), exclude=()),
                               progress=False)
    g = torch.Generator().manual_seed(3)
    batches = [{"input_ids": torch.randint(0, 100, (8, 12), generator=g),
                "attention_mask": torch.ones(8, 12, dtype=torch.long)} for _ in range(4)]
    emb = student.embeddings.word_embeddings.weight.clone()
    history = distill_(student, teacher, batches, DistillConfig(steps=40, lr=1e-3, warmup=5), progress=False)
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5
    assert torch.equal(student.embeddings.word_embeddings.weight, emb)  # frozen by default
    assert student.embeddings.word_embeddings.weight.requires_grad  # and given back afterwards


def test_bad_arguments():
    teacher = _teacher()
    with pytest.raises(ValueError, match="empty"):
        distill_(_student(teacher), teacher, [], progress=False)
    with pytest.raises(ValueError, match="hidden"):
        DistillConfig(hidden="middle")
    with pytest.raises(ValueError, match="steps"):
        DistillConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        DistillConfig(lr=0)
    with pytest.raises(ValueError, match="time_budget"):
        DistillConfig(time_budget=-1)
    with pytest.raises(ValueError, match="states"):
        distill_loss((torch.ones(2),), (torch.ones(2), torch.ones(2)), None, 0.0)
