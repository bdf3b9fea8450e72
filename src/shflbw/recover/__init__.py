"""Accuracy recovery: one-shot reconstruction from calibration data (and, later, distillation)."""

from shflbw.recover.reconstruct import reconstruct_group_lstsq, oneshot_prune_

__all__ = ["oneshot_prune_", "reconstruct_group_lstsq"]
