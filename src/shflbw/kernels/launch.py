"""Launch compiled Triton kernels without the JIT's per-call argument binding.

Why: eager calls at small and medium token counts are bound by host time, not GPU time. On the
H200 machine's CPU (prototype/launch_floor.py, Triton 3.6) one ``kernel[grid](...)`` costs 36 us
of host time: binding and specialising the arguments 10.8 us, the cache key 3.3 us, the C
launcher itself 12.6 us. The roundtrip path makes three launches (166 us a call against 22 us
for F.linear), and the MLP block's ~300 us of host time equalled its GPU time at T = 2048.

How: the first launch for a key goes through the JIT (compiling if needed) and keeps the
CompiledKernel it returns; later launches with the same key call its C launcher directly, with
the arguments in the kernel's parameter order, exactly as ``JITFunction.run`` does. The key holds
everything the JIT specialises on (each tensor's dtype and 16-byte alignment; each integer's
width, ==1 and divisibility by 16; every constexpr; warps and stages; the device), so a cached
kernel is only reused where the JIT would have picked the same binary.

Only for Triton versions whose launcher calling convention was checked on a GPU (``_CHECKED``);
anywhere else, under TRITON_INTERPRET, with launch hooks installed (profilers), or with
SHFLBW_FAST_LAUNCH=0, every launch goes through the JIT.
"""

from __future__ import annotations

import functools
import os

import torch

# Triton versions whose CompiledKernel.run convention (grid x, y, z, stream, function,
# packed_metadata, launch_metadata, enter hook, exit hook, *all parameters) was checked on the
# H200 against JIT launches (tests/test_kernels.py::test_fast_launch_matches_the_jit, GPU only).
_CHECKED = ("3.6.",)


@functools.cache
def fast_launch_enabled() -> bool:
    if os.environ.get("SHFLBW_FAST_LAUNCH", "1") == "0" or os.environ.get("TRITON_INTERPRET", "0") == "1":
        return False
    try:
        import triton
    except Exception:
        return False
    return triton.__version__.startswith(_CHECKED)


def _spec(a):
    """What the JIT specialises an argument on (kept conservative: more distinctions are safe)."""
    if type(a) is torch.Tensor or isinstance(a, torch.Tensor):
        return (a.dtype, a.data_ptr() & 15 == 0)
    if type(a) is int:
        return (a == 1, a & 15 == 0, -(2**31) <= a < 2**31)
    if a is None:
        return None
    return (type(a), a) if isinstance(a, (bool, float, str)) else (type(a), id(a))


@functools.cache
def _runtime():
    from triton import knobs
    from triton.runtime.driver import driver

    return knobs.runtime, driver.active


class Launcher:
    """``Launcher(kernel)(grid, *args, num_warps=, num_stages=, **constexprs)``: args are the
    kernel's leading runtime parameters in order, constexprs by name (all of them)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.cache: dict = {}

    def __call__(self, grid, *args, num_warps: int, num_stages: int = 3, **constexprs):
        if not fast_launch_enabled():
            self.kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
            return
        hooks, drv = _runtime()
        if hooks.launch_enter_hook is not None or hooks.launch_exit_hook is not None:
            # a profiler wants launch metadata: the JIT path
            self.kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
            return
        device = drv.get_current_device()
        key = (device, num_warps, num_stages, tuple(constexprs.items()), tuple([_spec(a) for a in args]))
        hit = self.cache.get(key)
        if hit is None:
            compiled = self.kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
            rest = self.kernel.params[len(args):]
            self.cache[key] = (compiled, tuple(constexprs.get(p.name, p.default) for p in rest))
            return
        compiled, tail = hit
        compiled.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                     drv.get_current_stream(device), compiled.function, compiled.packed_metadata, None, None, None,
                     *args, *tail)
