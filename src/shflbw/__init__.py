"""shflbw: Shuffled Block-wise (Shfl-BW) sparsity for PyTorch.

Prune weights in V x 1 column vectors after a row permutation, pack them, and run them on
tensor cores.
"""

from shflbw.format import ShflBWMatrix
from shflbw.ops import PackedMLP, linear, mlp, spmm
from shflbw.prune import PruneResult, prune

__version__ = "0.1.0.dev0"

__all__ = ["PackedMLP", "PruneResult", "ShflBWMatrix", "__version__", "linear", "mlp", "prune", "spmm"]
