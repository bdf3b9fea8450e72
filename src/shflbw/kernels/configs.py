"""Hand-picked launch configurations, keyed only on what changes the compiled kernel.

Never keyed on the token count beyond a coarse bucket (it changes every call); no autotuning at
call time, so a first call inside CUDA-graph capture does not benchmark. Numbers come from
benchmarks/ runs on an H200 (BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from shflbw.kernels.conv2d import ConvConfig
from shflbw.kernels.decode import DecodeConfig, token_tile
from shflbw.kernels.spmm import SpmmConfig

# Token counts up to this go to the weight-bound decode kernel (T = 16 measured; T = 32 not yet).
DECODE_MAX_TOKENS = 32
# Split-K for the feature-major kernel: about this many programs per SM, and at least this many
# [BK] steps of kept vectors per program (fit to prototype/sweep_medium_t.py, below).
SPLITK_PROGRAMS_PER_SM = 2
SPLITK_MIN_STEPS = 8
# Kept vectors per step of the feature-major kernel (spmm_config below).
SPMM_BLOCK_K = 32
# Groups of at most this many steps run the persistent kernel, this many programs per SM.
PERSISTENT_MAX_STEPS = 4
PERSISTENT_PROGRAMS_PER_SM = 3


# The conv kernel takes BN 64 below this many BN-128 programs per SM (conv_config, below).
CONV_BN64_PROGRAMS_PER_SM = 6


# Warps of fc1 when its epilogue finishes a deferred LayerNorm (kernels/mlp.py, NORM_IN). Offline
# ptxas for sm_90a (prototype/regs_offline.py, triton 3.6) gives 255 registers and 32 B spilled a
# thread at 4 warps, 130 and no spill at 8, but 8 warps were slower: compiled BERT-large deferred
# 26.37 ms against 24.25 ms (H100, prototype/e2e_deferred_configs.py, BENCHMARKS.md session 11).
NORM_IN_NUM_WARPS = 4


# Eager calls: below this many tokens the path with the fewest launches ('transpose', two) runs.
EAGER_ROUNDTRIP_MIN_TOKENS = 512


def linear_plan(tokens: int, n_groups: int, nnz: int, sms: int | None, capturing: bool = True) -> tuple[str, int]:
    """(path, k_splits) for token-major ``shflbw.linear`` (kernels/linear.py names the paths).

    ``capturing``: the call is being recorded into a CUDA graph (as decode and serving stacks run
    small token counts). Eager calls at T = 33-511 are bound by the host's launch cost, not the GPU
    (prototype/launch_floor.py on the H200 machine: 36 us a Triton launch, 53 us with our argument
    handling, F.linear 22 us), so outside capture the path with the fewest launches runs:
    'transpose' (2 launches) below EAGER_ROUNDTRIP_MIN_TOKENS, as measured eager in commit 126f865
    (BENCHMARKS.md); split-K's 4 launches took 4096 x 4096, T = 128, 75 % from 0.46x to 0.18x eager.

    Under capture, from prototype/sweep_medium_t.py (H200, CUDA-graph replays, commits a0f72c5
    and 1a642f9; eight layers of 768-14336 rows, V = 64, T = 64-1024, 50-87.5 %):
    - the roundtrip beat the transpose-scatter store in every case from T = 64 (14336 x 4096,
      T = 256, 75 %: 1.40x of dense against 0.56x), so 'transpose' is no longer chosen;
    - where the roundtrip launches few programs for long groups (4096 x 11008, 1024 x 4096),
      splitting each group's kept vectors (float32 atomics, the transpose back finishing) won:
      4096 x 11008, T = 256, 75 %: 1.32x against 0.99x. Splits: about 2 programs per SM, a power
      of two up to 8, never under 8 steps each. This rule came within 3.2 % of the best variant on
      average over 120 cases (geometric mean; the worst 0.72 of the best) against 7.5 % for the
      roundtrip-or-decode rule it replaces.
    Atomics make the sum order vary between runs, so under torch.use_deterministic_algorithms the
    roundtrip runs instead.
    """
    if tokens <= DECODE_MAX_TOKENS:
        return "decode", 0
    if not capturing:
        return ("transpose", 1) if tokens < EAGER_ROUNDTRIP_MIN_TOKENS else ("roundtrip", 1)
    if sms is None or n_groups == 0 or torch.are_deterministic_algorithms_enabled():
        return "roundtrip", 1
    programs = n_groups * math.ceil(tokens / roundtrip_block_n(tokens))
    splits = 2 ** max(0, round(math.log2(max(1.0, SPLITK_PROGRAMS_PER_SM * sms / programs))))
    steps = nnz / n_groups / SPMM_BLOCK_K
    while splits > 1 and steps / splits < SPLITK_MIN_STEPS:
        splits //= 2
    splits = min(8, splits)
    return ("splitk", splits) if splits > 1 else ("roundtrip", 1)


def roundtrip_block_n(n: int) -> int:
    # BN 128 from 256 tokens (sweep_medium_t.py, graph replays: 11008 x 4096, T = 512, 75 %: 1.36x
    # with BN 128 against 1.16x with 64; 4096 x 4096, T = 256: 1.01x against 1.04x), 64 below.
    return 128 if n >= 256 else 64


def spmm_config(vector: int, n: int, dtype: torch.dtype, kept_per_group: float | None = None) -> SpmmConfig:
    """The feature-major kernel's config; ``kept_per_group`` (nnz / groups) picks the persistent
    kernel for short reductions.

    BN 128, BK 32, 4 warps, 5 stages for every V (prototype/sweep_stages.py, H200, T = 4096, after
    the unmasked int32 main loop): best or within 3 % of the best of 6-8 configs in 8 of 9 cases
    (V = 64 and 128, 50-87.5 %; 4096 x 11008 V = 64: 2.14x against 2.26x for 7 stages). Five
    stages are the fewest at which the loop keeps prefetches in flight (cp.async.wait_group 3;
    with 3-4 stages it drains every step, as the column indices are committed last).

    Groups of at most PERSISTENT_MAX_STEPS [BK] steps run the persistent kernel with
    PERSISTENT_PROGRAMS_PER_SM programs per SM (prototype/sweep_persistent.py, H200, commit 6756969,
    CUDA-graph replays, 75-87.5 %, V = 64): ResNet-50's 1x1 convs at batch 64 with 1-4 steps went
    0.90 -> 1.04x (64 -> 256 at 56^2), 0.89 -> 1.03x (128 -> 512), 1.01 -> 1.16x (256 -> 1024),
    1.33 -> 1.43x (512 -> 128), and 4096 x 1024 at 87.5 % (4 steps) 2.40 -> 2.63x. From 8 steps
    the one-tile kernel won (4096 x 1024 at 75 %: 1.71x against 1.69x; 32 steps, 4096^2: 1.95x
    against 1.66x): its 5 programs per SM hide the gathers' latency better than the persistent
    kernel's 3 (4 per SM ran slower than 3 everywhere, so no more than 3 fit at once).
    """
    if kept_per_group is not None and kept_per_group <= PERSISTENT_MAX_STEPS * SPMM_BLOCK_K:
        return SpmmConfig(block_n=roundtrip_block_n(n), block_k=SPMM_BLOCK_K, num_warps=4, num_stages=5,
                          programs_per_sm=PERSISTENT_PROGRAMS_PER_SM)
    return SpmmConfig(block_n=roundtrip_block_n(n), block_k=SPMM_BLOCK_K, num_warps=4, num_stages=5)


def kept_per_group(values: torch.Tensor, group_ptr: torch.Tensor) -> float:
    """Mean kept vectors per group, from shapes alone (no device sync)."""
    return values.shape[0] / max(1, group_ptr.numel() - 1)


def packed_spmm_config(values: torch.Tensor, group_ptr: torch.Tensor, n: int) -> SpmmConfig:
    """``spmm_config`` for one packed weight (its V, dtype and mean kept vectors) over n tokens."""
    return spmm_config(values.shape[1], n, values.dtype, kept_per_group(values, group_ptr))


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sm_count(device: torch.device) -> int | None:
    """Multiprocessors of a CUDA device; None elsewhere (the CPU interpreter)."""
    if device.type != "cuda":
        return None
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def conv_config(window: int, n_groups: int, positions: int, sms: int | None) -> ConvConfig:
    """The implicit-GEMM conv kernel's launch config (prototype/sweep_conv.py, H200, batch 64, 75 %,
    V = 64, every ResNet-50 / VGG-16 layer; BENCHMARKS.md).

    (BN 128, BK 32, 4 warps, 5 stages) had the best geometric mean of six configs on both models
    (ResNet-50 1.15x, VGG-16 1.48x of the best cuDNN; the old default (128, 64, 4, 3): 1.10x, 1.39x).
    Windows larger than 1x1 that fill fewer than CONV_BN64_PROGRAMS_PER_SM programs per SM at BN 128
    run BN 64 instead: ResNet-50's 3x3 512 at 7^2 went 1.14x -> 1.43x, 128 at 28^2 1.23x -> 1.31x;
    every 3x3 layer with more programs was as fast or faster at BN 128.
    """
    if sms is not None and window > 1 and n_groups * math.ceil(positions / 128) < CONV_BN64_PROGRAMS_PER_SM * sms:
        return ConvConfig(block_n=64)
    return ConvConfig()


@dataclass(frozen=True)
class AddNormConfig:
    one_pass: bool
    block_f: int
    block_t: int
    num_warps: int
    num_stages: int = 1  # the walk's pipeline depth (loads in flight through shared memory)


def addnorm_config(features: int, residual: bool = True, norm_res: bool = False) -> AddNormConfig:
    """The add + LayerNorm kernel's launch config; ``residual``: whether it reads a second tensor;
    ``norm_res``: the residual is a deferred LayerNorm's raw input, normalised as it is read. It takes
    the residual's config: BT 32 / 8 warps spills 1240 B a thread there (offline ptxas) yet timed
    100.0 us on 1024 x 32768 against 99.1 for BT 16 / 4 warps and 121.5 for BT 16 / 8 warps, and in
    the compiled BERT-large the less spilling configs were slower (H100, BENCHMARKS.md session 11).
    (prototype/sweep_addnorm.py, H200, bf16, 32768 tokens; commit 8248b61, and session 8's commits
    ffb5407 and 152f891 for the tails that read h alone and for the pipelined walk).

    Up to 1024 features the tile of BT tokens x all features is read once and kept in registers:
    1024 x 32768 with a residual 79 us at BT 32 / 8 warps (BT 16 / 4 warps 85 us; 131 us for
    PyTorch's add + layer_norm), without one 57 us at BT 16 / 4 warps (BT 32 / 8 warps 59.5 us; a
    copy of the tensor takes 36 us); 384 x 32768: 35 / 26 us at BT 16 / 4 warps. Wider rows (4096 x
    8192) walk the features twice with the loads pipelined: 99 us at BF 128 / BT 32 / 8 warps / 3
    stages, against 166 us for session 5's three-pass walk and 110 us for PyTorch.
    """
    if features <= 512 or (features <= 1024 and not residual):
        return AddNormConfig(one_pass=True, block_f=0, block_t=16, num_warps=4)
    if features <= 1024:
        return AddNormConfig(one_pass=True, block_f=0, block_t=32, num_warps=8)
    return AddNormConfig(one_pass=False, block_f=128, block_t=32, num_warps=8, num_stages=3)


def decode_config(tokens: int, in_features: int) -> DecodeConfig:
    """The decode kernel's launch config for this token count and K (H200 sweeps, BENCHMARKS.md).

    T = 1: the CUDA-core kernel, BK 128, 4 warps (pipelining its loop with cp.async,
    ``gemv_stages`` 2-4, won nothing: prototype/sweep_stages.py). T > 1 with K >= 2048: X
    transposed first (one more launch), then BK 128, 4 warps, 5 stages: at T = 16 on the four
    layers >= 4096, 1.34-1.89x of dense at 75 % against 1.26-1.79x for BK 256 / 8 warps / 3 stages,
    better in 11 of 12 cases at 50-87.5 % (sweep_stages.py); that in turn beat the tensor-core tile
    gathering from token-major X (1.15-1.41x, commit 94f0de4). Small K (3072 x 768): the transpose
    does not pay; the tile plan stays.
    """
    if tokens > 1 and in_features >= 2048:
        return DecodeConfig(block_k=128, num_warps=4, num_stages=5, transpose_x=True)
    return DecodeConfig()


def decode_plan(n_groups: int, vector: int, nnz: int, tokens: int, sms: int | None, config: DecodeConfig) -> tuple[int, int]:
    """(row_slice, k_splits) for the decode kernel (whole V-row groups; split-K finished in-launch).

    From the H200 decode sweeps (prototype/sweep_small_t.py, BENCHMARKS.md; 5 layers x T = 1, 16 x
    50/75/87.5 %), the best split count keeps about this many programs per SM, rounded to a power
    of two, 1-8: 3 at T = 1 (the CUDA-core kernel: within 2.3 % of the best of 14 variants on
    average), 1 at T > 1 with X transposed (BK 256: within 2.6 % of the best of 12), 2 for the
    tensor-core tile from token-major X (within 3 % of the best of 11). Never more splits than a
    group's average kept vectors fill [block_k] steps. Row slices of 32 never won by more than
    noise; 16 lost everywhere (BENCHMARKS.md).
    """
    if sms is None:
        return vector, 1
    if tokens == 1 and config.gemv:
        per_sm = 3
    elif config.transpose_x:
        per_sm = 1
    else:
        per_sm = 2
    tiles = 1 if tokens == 1 else math.ceil(tokens / token_tile(tokens, config))
    want = per_sm * sms / max(1, n_groups * tiles)
    splits = 2 ** max(0, round(math.log2(max(1.0, want))))
    steps = max(1, math.ceil(nnz / max(1, n_groups) / config.block_k))
    return vector, int(min(8, splits, steps))
