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
    # prototype/sweep_fm.py at T = 4096 (BENCHMARKS.md): BN 128, BK 64, 4 warps won for V = 64 and
    # V = 128 alike (V = 128, 4096^2, 75 %: 88 us, against 105 us with BK 32 and 8 warps); 3 or 4
    # stages were within noise.
    block_n = 128 if n >= 1024 else 64
    return SpmmConfig(block_n=block_n, block_k=64, num_warps=4, num_stages=3)


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sm_count(device: torch.device) -> int | None:
    """Multiprocessors of a CUDA device; None elsewhere (the CPU interpreter)."""
    if device.type != "cuda":
        return None
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def decode_plan(n_groups: int, vector: int, in_features: int, sms: int | None) -> tuple[int, int]:
    """(row_slice, k_splits) for the decode kernel, chosen from the H200 decode sweep (BENCHMARKS.md).

    K >= 2048: whole V-row groups, 4 K splits (best or within 10 % of best on 4096 x 4096,
    11008 x 4096, 4096 x 11008 and 14336 x 4096 at T = 1 and 16). Small K (3072 x 768): 32-row
    slices and no split-K won (0.82-1.14x against 0.76-0.80x split 4). Slices of 16 rows lost
    everywhere (0.39x at 4096^2, 50 %, T = 1): 32-byte pieces of each 128-byte vector and tiny dots.
    """
    if sms is None:
        return vector, 1
    if in_features < 2048:
        return min(vector, 32), 1
    return vector, 4
