"""Programmatic dependent launch (PDL, Hopper and later) for every shflbw kernel.

Why: a compressed BERT-large forward's kernels add up to 21.7 ms of GPU time, but the forward takes
22.7 ms even replayed as a CUDA graph (H200, BENCHMARKS.md session 8): about 6 us pass between
each of its ~170 dependent kernels while one drains its last wave and the next is launched and
ramps up. With PDL a kernel's programs may be scheduled while the kernel before it in the stream
is still running its last wave.

Each kernel calls ``pdl_enter`` first. ``griddepcontrol.launch_dependents`` lets the next kernel
be scheduled once every program of this one has started (so the waiting programs of the next can
never keep this one's from running), and ``griddepcontrol.wait`` holds this program until the
kernel before it has finished and its writes are visible. The wait comes before this kernel's
first memory access of any kind, not only before it reads the previous kernel's output, so every
ordering a stream gives still holds (weights updated in place by an optimizer step, a buffer the
previous kernel still reads being reused for this one's output). Where the kernel before is not a
PDL one (a cuBLAS or PyTorch kernel), it simply runs to completion first, as without PDL.

Off on the CPU interpreter (no inline PTX), on GPUs before compute capability 9.0, and when the
environment sets ``SHFLBW_PDL=0`` (for A/B timing).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """Let the next kernel be scheduled, then wait for the previous one (module docstring)."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


def pdl_enabled(device: torch.device) -> bool:
    """Whether kernels launched on ``device`` use programmatic dependent launch."""
    from shflbw.kernels.spmm import interpreting  # spmm imports this module

    if device.type != "cuda" or interpreting() or os.environ.get("SHFLBW_PDL", "1") == "0":
        return False
    return _capability(device.index if device.index is not None else torch.cuda.current_device()) >= 9


def pdl_launch(device: torch.device) -> dict:
    """(``PDL`` constexpr, launch keyword) for a kernel on ``device``: pass both as ``**``."""
    on = pdl_enabled(device)
    return {"PDL": on, "launch_pdl": True} if on else {"PDL": False}


@functools.cache
def _capability(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]
