"""Modules and model surgery: masked mode, packed layers, conversion, save / load."""

from shflbw.nn.addnorm import ShflBWAddNorm
from shflbw.nn.attention import ShflBWSelfAttention
from shflbw.nn.cnn import ShflBWConvChain, ShflBWResidualStage, fold_batchnorm
from shflbw.nn.conv2d import ShflBWConv2d
from shflbw.nn.convert import compress_, decompress_
from shflbw.nn.linear import ShflBWLinear
from shflbw.nn.masked import CubicSparsitySchedule, ShflBWMask, sparsify_
from shflbw.nn.mlp import ShflBWMLP
from shflbw.nn.regions import fuse_regions_, unfuse_regions_
from shflbw.nn.serialization import load, save

__all__ = ["CubicSparsitySchedule", "ShflBWAddNorm", "ShflBWConv2d", "ShflBWConvChain", "ShflBWLinear", "ShflBWMLP",
           "ShflBWMask", "ShflBWResidualStage", "ShflBWSelfAttention", "compress_", "decompress_", "fold_batchnorm", "fuse_regions_", "load",
           "save", "sparsify_", "unfuse_regions_"]
