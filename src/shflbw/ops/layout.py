"""``shflbw::to_chwn``: a logical NCHW tensor (NCHW or channels_last) into the conv kernels' (C, H, W, N).

A registered op so that torch.compile keeps the tile-transpose kernel (kernels/layout.py) instead
of generating its own copy: inductor's copy for a channels_last ResNet-50 region entry made the
compiled forward 1.5x slower than the eager one (benchmarks/run_e2e.py, H200: 3283 us against
2190 us; BENCHMARKS.md, session 5).
"""

from __future__ import annotations

import torch

from shflbw.ops.dispatch import eager_op, use_triton


@eager_op("shflbw::to_chwn")
def to_chwn_op(x: torch.Tensor) -> torch.Tensor:
    if use_triton(x, 16):
        from shflbw.kernels.layout import to_chwn

        return to_chwn(x)
    return x.permute(1, 2, 3, 0).contiguous()


@to_chwn_op.register_fake
def _(x):
    return x.new_empty(x.shape[1], x.shape[2], x.shape[3], x.shape[0])
