"""Hand-picked launch configurations, keyed only on what changes the compiled kernel.

Never keyed on the token count beyond a coarse bucket (it changes every call); no autotuning at
call time, so a first call inside CUDA-graph capture does not benchmark. Numbers come from
benchmarks/ runs on an H200 (BENCHMARKS.md).
"""

from __future__ import annotations

import functools

import torch

from shflbw.kernels.spmm import SpmmConfig

# Token counts up to this go to the weight-bound decode kernel.
DECODE_MAX_TOKENS = 32
# From this many tokens the 'roundtrip' path (feature-major output, transpose back) beats storing
# through the permutation: at T = 4096 it won on all 12 cases (1.36-1.61x vs 0.69-1.14x of dense at
# 75 %); at T = 512 the scatter store won 9 of 12. T = 1024-2048 not measured yet.
ROUNDTRIP_MIN_TOKENS = 2048


def spmm_config(vector: int, n: int, dtype: torch.dtype) -> SpmmConfig:
    block_n = 128 if n >= 1024 else 64
    if vector >= 128:
        return SpmmConfig(block_n=block_n, block_k=32, num_warps=8, num_stages=3)
    return SpmmConfig(block_n=block_n, block_k=64, num_warps=4, num_stages=3)


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def decode_splits(n_groups: int, device: torch.device) -> int:
    """Programs per row group so that the grid covers the GPU about twice."""
    if device.type != "cuda":
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return max(1, min(16, -(-2 * sms // max(n_groups, 1))))
