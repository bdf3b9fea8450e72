"""Distillation fine-tuning: a masked student learns to match its dense teacher's outputs.

The student comes out of ``sparsify_`` or ``oneshot_prune_``, so it is in masked mode: each pruned
layer's weight passes through its fixed mask in the forward, so the pruned weights get zero
gradient and stay pruned whatever the optimizer does. The loss matches hidden states (the last,
or every layer's: layer-wise matching keeps each block close to the dense one) on the valid tokens,
each scaled by the teacher's mean square so layers weigh alike, plus 1 - cosine between the
mean-pooled last hidden states (the sentence embedding of encoder models such as MiniLM).
The data is unlabelled: any batches the model takes (dicts of tensors for Hugging Face models).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 1000
    lr: float = 5e-5
    warmup: int = 50  # linear warm-up steps, then cosine decay to 0
    weight_decay: float = 0.0
    hidden: str = "all"  # "all" hidden states (Hugging Face output_hidden_states) or the "last"
    cosine_weight: float = 1.0  # weight of 1 - cos(mean-pooled student, teacher)
    grad_clip: float = 1.0
    freeze_embeddings: bool = True  # word embeddings stay the teacher's (they carry word-level similarity)
    dropout: bool = False  # the student's dropout off: it only adds noise to a regression target
    time_budget: float | None = None  # seconds; stops early when spent
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    seed: int = 0

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError(f"steps must be positive, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.hidden not in ("all", "last"):
            raise ValueError(f"hidden must be 'all' or 'last', got {self.hidden!r}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be positive seconds, got {self.time_budget}")


def default_outputs(model: nn.Module, batch, hidden: str) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """(hidden states to match, token mask or None) for a Hugging Face model (dict batch) or any module."""
    if isinstance(batch, dict):
        out = model(**batch, output_hidden_states=hidden == "all")
        if hidden == "all" and getattr(out, "hidden_states", None) is not None:
            states = tuple(out.hidden_states[1:])  # skip the embeddings (frozen, equal by default)
        elif getattr(out, "last_hidden_state", None) is not None:
            states = (out.last_hidden_state,)
        else:
            raise TypeError("the model's output has neither hidden_states nor last_hidden_state: pass outputs=")
        return states, batch.get("attention_mask")
    out = model(batch)
    states = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    return states, None


def distill_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...], mask: torch.Tensor | None,
                 cosine_weight: float) -> torch.Tensor:
    """Mean over states of masked MSE / teacher mean square, plus cosine_weight * (1 - cos) of the pooled last state."""
    if len(student) != len(teacher):
        raise ValueError(f"student gave {len(student)} states, teacher {len(teacher)}")
    loss = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        s, t = s.float(), t.float()
        if mask is not None and s.dim() == 3:
            m = mask.to(s.dtype).unsqueeze(-1)
            err = ((s - t) ** 2 * m).sum() / (m.sum() * s.shape[-1]).clamp_min(1)
            scale = ((t**2) * m).sum() / (m.sum() * s.shape[-1]).clamp_min(1)
        else:
            err, scale = ((s - t) ** 2).mean(), (t**2).mean()
        loss = loss + err / scale.clamp_min(1e-12)
    loss = loss / len(student)
    if cosine_weight:
        s, t = student[-1].float(), teacher[-1].float()
        if s.dim() == 3:
            m = (mask.to(s.dtype) if mask is not None else s.new_ones(s.shape[:2])).unsqueeze(-1)
            s, t = (s * m).sum(1) / m.sum(1).clamp_min(1e-9), (t * m).sum(1) / m.sum(1).clamp_min(1e-9)
        loss = loss + cosine_weight * (1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=-1)).mean()
    return loss


def distill_(
    student: nn.Module,
    teacher: nn.Module,
    data: Iterable,
    config: DistillConfig = DistillConfig(),
    outputs: Callable | None = None,
    schedule=None,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``student`` (in place) toward ``teacher`` on unlabelled batches; returns the loss per step.

    ``data``: batches, cycled in a seeded shuffled order. ``outputs(model, batch, hidden)`` returns
    (states, token mask or None); the default handles Hugging Face models and plain modules.
    ``schedule``: an optional ``CubicSparsitySchedule`` stepped after each optimizer step (a gradual
    ramp that re-searches the masks as it goes); without it the masks stay fixed.
    """
    batches = list(data)
    if not batches:
        raise ValueError("distillation data is empty")
    outputs = outputs or default_outputs
    device = next(student.parameters()).device
    use_amp = config.amp and device.type == "cuda"
    frozen = []
    if config.freeze_embeddings:
        for mod in student.modules():
            if isinstance(mod, nn.Embedding) and mod.weight.requires_grad:
                mod.weight.requires_grad_(False)
                frozen.append(mod.weight)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        for p in frozen:
            p.requires_grad_(True)
        raise ValueError("the student has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        frac = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    was_training = student.training
    student.train(config.dropout)
    teacher.eval()
    order = random.Random(config.seed)
    queue: list[int] = []
    history: list[float] = []
    it = range(config.steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        it = bar = tqdm(it, desc="shflbw: distill", unit="step")
    start = time.monotonic()
    try:
        for step in it:
            if not queue:
                queue = list(range(len(batches)))
                order.shuffle(queue)
            batch = _to(batches[queue.pop()], device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                with torch.no_grad():
                    t_states, mask = outputs(teacher, batch, config.hidden)
                s_states, _ = outputs(student, batch, config.hidden)
                loss = distill_loss(s_states, t_states, mask, config.cosine_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"distillation loss is {loss.item()} at step {step}: lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            if schedule is not None:
                schedule.step(student)
            history.append(float(loss.detach()))
            if bar is not None and step % 10 == 0:
                bar.set_postfix(loss=f"{history[-1]:.4f}")
            if config.time_budget is not None and time.monotonic() - start > config.time_budget:
                break
    finally:
        if bar is not None:
            bar.close()
        student.train(was_training)
        for p in frozen:
            p.requires_grad_(True)
    return history


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if torch.is_tensor(batch):
        return batch.to(device)
    return batch
