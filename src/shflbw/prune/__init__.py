"""Pruning: masks and row permutations for Shfl-BW and the patterns it is compared with."""

from shflbw.prune.api import PruneResult, prune

__all__ = ["PruneResult", "prune"]
