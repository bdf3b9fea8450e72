"""Accuracy recovery: one-shot reconstruction from calibration data, and distillation fine-tuning."""

from shflbw.recover.distill import DistillConfig, distill_
from shflbw.recover.reconstruct import oneshot_prune_, reconstruct_group_lstsq

__all__ = ["DistillConfig", "distill_", "oneshot_prune_", "reconstruct_group_lstsq"]
