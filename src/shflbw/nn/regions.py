"""Regions: runs of layers that execute in the kernels' own layout, fused after ``compress_``.

- MLP blocks (Linear -> ReLU/GELU -> Linear) run feature-major inside: shflbw.nn.mlp;
- transformer sublayer tails, LayerNorm(dense(x) + residual), hand their result on feature-major:
  shflbw.nn.addnorm; within a BERT-style layer the attention tail's LayerNorm is deferred into the
  MLP and the MLP tail: shflbw.nn.deferred_norm;
- self-attention (Q, K, V projections and softmax attention) reads and writes feature-major:
  shflbw.nn.attention;
- stages of ResNet residual blocks run in (C, H, W, N) with batch-norm folded: shflbw.nn.cnn.

All are inference modules that ``unfuse_regions_`` turns back into the per-layer modules they
came from (``save`` writes the per-layer form; ``load`` fuses again).
"""

from __future__ import annotations

from torch import nn

from shflbw.nn.addnorm import fuse_addnorm_regions_, unfuse_addnorm_regions_
from shflbw.nn.attention import fuse_attention_regions_, unfuse_attention_regions_
from shflbw.nn.cnn import fuse_cnn_regions_, unfuse_cnn_regions_
from shflbw.nn.deferred_norm import link_deferred_norms_, unlink_deferred_norms_
from shflbw.nn.mlp import fuse_mlp_regions_, unfuse_mlp_regions_


def fuse_regions_(model: nn.Module, defer_layernorm: bool = False) -> list[str]:
    """Fuse every recognised region of a compressed model; returns the names of the sites fused.

    ``defer_layernorm``: also link BERT-style layers so the attention tail's LayerNorm is finished
    by its readers (shflbw.nn.deferred_norm). Off by default: on an H100 it did not beat the
    LayerNorm kernel it removes (BENCHMARKS.md, session 9)."""
    # MLP blocks first: the tail after one is fused as add + LayerNorm on the block's output; the
    # deferred LayerNorm links (not counted as sites) need the tails, the MLP and the attention fused.
    done = (fuse_mlp_regions_(model) + fuse_addnorm_regions_(model) + fuse_attention_regions_(model)
            + fuse_cnn_regions_(model))
    if defer_layernorm:
        link_deferred_norms_(model)
    return done


def unfuse_regions_(model: nn.Module) -> int:
    """Put every region back as its per-layer modules; returns how many regions there were."""
    unlink_deferred_norms_(model)
    return (unfuse_addnorm_regions_(model) + unfuse_attention_regions_(model) + unfuse_mlp_regions_(model)
            + unfuse_cnn_regions_(model))
