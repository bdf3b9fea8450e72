"""Accuracy recovery: one-shot reconstruction from calibration data, and distillation fine-tuning."""

from shflbw.recover.allocate import allocate_sparsity, config_with
from shflbw.recover.distill import DistillConfig, distill_
from shflbw.recover.reconstruct import oneshot_prune_, reconstruct_group_lstsq
from shflbw.recover.recipes import oneshot_recipe_

__all__ = ["allocate_sparsity", "config_with", "DistillConfig", "distill_", "oneshot_prune_", "oneshot_recipe_",
           "reconstruct_group_lstsq"]
