"""shflbw: Shuffled Block-wise (Shfl-BW) sparsity for PyTorch.

Prune weights in V x 1 column vectors after a row permutation, pack them, and run them on
tensor cores.
"""

from shflbw.config import LayerOverride, ShflBWConfig
from shflbw.format import ShflBWMatrix
from shflbw.nn import (CubicSparsitySchedule, ShflBWAddNorm, ShflBWConv2d, ShflBWConvChain, ShflBWLinear, ShflBWMLP,
                       ShflBWResidualStage, ShflBWSelfAttention, compress_, decompress_, fold_batchnorm, load, save,
                       sparsify_)
from shflbw.ops import PackedMLP, conv2d, conv2d_chwn, linear, mlp, spmm
from shflbw.prune import PruneResult, prune

__version__ = "0.1.0.dev0"

__all__ = [
    "CubicSparsitySchedule",
    "LayerOverride",
    "PackedMLP",
    "PruneResult",
    "ShflBWAddNorm",
    "ShflBWConfig",
    "ShflBWConv2d",
    "ShflBWConvChain",
    "ShflBWLinear",
    "ShflBWMLP",
    "ShflBWMatrix",
    "ShflBWResidualStage",
    "ShflBWSelfAttention",
    "__version__",
    "compress_",
    "conv2d",
    "conv2d_chwn",
    "decompress_",
    "fold_batchnorm",
    "linear",
    "load",
    "mlp",
    "prune",
    "save",
    "sparsify_",
    "spmm",
]
