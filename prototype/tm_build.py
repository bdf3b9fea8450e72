"""Building and launching the token-major CUDA prototypes: variants, NVRTC builds, launches."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tm_pack import BT

_HERE = Path(__file__).parent
COMMON = (_HERE / "tm_mma_common.cuh").read_text()
SOURCES = {"tm": (COMMON + (_HERE / "tm_mma.cu").read_text(), "shflbw_tm_mma"),
           "cluster": (COMMON + (_HERE / "tm_mma_cluster.cu").read_text(), "shflbw_tm_cluster")}


@dataclass(frozen=True)
class Variant:
    kind: str  # "tm" (tm_mma.cu) or "cluster" (tm_mma_cluster.cu)
    kc: int  # columns per staged chunk
    nstage: int  # staged chunks in flight
    order: str = "quads"  # column order inside a chunk (prepare)
    cl: int = 1  # CTAs per cluster sharing the X tile (cluster kernel)
    dtype: str = "bfloat16"
    gpc: int = 4  # groups per CTA (2 * gpc warps)
    straddle: bool = False  # k-steps may run into the next chunk (no padding per chunk)
    # "scatter": F.linear's layout, each element stored through perm; "group": group order (what a
    # consumer that folds the permutation reads); "permute": group order, then tm_permute.cu
    # "splitk": gridDim.z = splits CTAs share a tile's chunks, adding float32 sums atomically into a
    # zeroed group-order buffer that tm_permute.cu (FINISH) biases, casts and permutes
    out: str = "scatter"
    gelu: bool = False  # GELU (tanh form) in the epilogue, for an MLP block's first layer
    splits: int = 1
    max_tokens: int | None = None  # run only on cases with at most this many tokens

    @property
    def name(self) -> str:
        return (f"{self.kind}{self.cl}-g{self.gpc}-kc{self.kc}-s{self.nstage}-{self.order}"
                + ("-str" if self.straddle else "") + ("" if self.out == "scatter" else f"-{self.out}")
                + ("-gelu" if self.gelu else "") + (f"-x{self.splits}" if self.splits > 1 else ""))

    @property
    def smem(self) -> int:
        return self.nstage * BT * (self.kc + 8) * 2 + (16 * self.nstage if self.kind == "cluster" else 0)


def build_options(v: Variant) -> list[str]:
    """The -D options that select a variant in the CUDA sources."""
    options = [f"-DKC={v.kc}", f"-DNSTAGE={v.nstage}", f"-DGPC={v.gpc}"] + ([f"-DCL={v.cl}"] if v.kind == "cluster" else [])
    options += ["-DHALF"] if v.dtype == "float16" else []
    options += ["-DSTRADDLE"] if v.straddle else []
    options += ["-DGROUP_OUT"] if v.out in ("group", "permute") else []
    options += ["-DSPLITK"] if v.out == "splitk" else []
    options += ["-DGELU"] if v.gelu else []
    return options


def compile_variant(v: Variant):
    """NVRTC build of one kernel variant, its dynamic shared-memory limit raised."""
    source, name = SOURCES[v.kind]
    return build(source, name, "90a" if v.kind == "cluster" else None, build_options(v), v.smem)


def build(source: str, name: str, arch: str | None, options: list[str], smem: int):
    """torch.cuda._compile_kernel (NVRTC, in torch's CUDA wheels); where this torch lacks it, CuPy's
    RawModule (also NVRTC; the device image carries CuPy). Either way a callable
    kernel(grid=, block=, args=, shared_mem=) launching on torch's current stream."""
    try:
        kernel = torch.cuda._compile_kernel(source, name, compute_capability=arch, nvcc_options=options)
    except (AttributeError, TypeError) as e:
        print(f"torch.cuda._compile_kernel unusable here ({type(e).__name__}: {e}); building with CuPy", flush=True)
        return CupyKernel(source, name, arch, options, smem)
    allow_shared(kernel, smem)
    return kernel


class CupyKernel:
    def __init__(self, source: str, name: str, arch: str | None, options: list[str], smem: int):
        import cupy

        major, minor = torch.cuda.get_device_capability()
        target = f"--gpu-architecture=sm_{arch or f'{major}{minor}'}"
        module = cupy.RawModule(code=source, options=tuple(options) + (target,), backend="nvrtc")
        self.kernel = module.get_function(name)
        self.kernel.max_dynamic_shared_size_bytes = smem
        self.cupy = cupy

    def __call__(self, grid, block, args, shared_mem=0):
        import numpy

        cp = self.cupy
        # pointers as 8-byte integers (no __cuda_array_interface__ round trip, which may synchronise
        # streams and so break graph capture); the kernels' int parameters as 4-byte integers
        cargs = [numpy.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else numpy.int32(a) for a in args]
        with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            self.kernel(grid, block, tuple(cargs), shared_mem=shared_mem)


def allow_shared(kernel, nbytes: int) -> None:
    """Raise a kernel's dynamic shared-memory limit (past 48 KB it must be asked for)."""
    if hasattr(kernel, "set_shared_memory_config"):
        kernel.set_shared_memory_config(nbytes)
    else:  # older torch: through the driver directly
        import ctypes

        getter = getattr(torch.cuda._utils, "_get_gpu_runtime_library", None) or getattr(
            torch.cuda._utils, "_get_cuda_library", None)
        lib = getter() if getter else ctypes.CDLL("libcuda.so.1")
        assert lib.cuFuncSetAttribute(kernel.func, 8, nbytes) == 0  # 8: MAX_DYNAMIC_SHARED_SIZE_BYTES


PERMUTE_ROWS, PERMUTE_MAX_P = {False: 4, True: 2}, 16384  # tm_permute.cu's rows per CTA (FINISH: 2); widest row


def compile_permute(finish: bool = False, half: bool = False):
    options = (["-DFINISH"] if finish else []) + (["-DHALF"] if half else [])
    return build((_HERE / "tm_permute.cu").read_text(), "shflbw_permute_cols", None, options,
                 PERMUTE_ROWS[finish] * PERMUTE_MAX_P * (4 if finish else 2))


def permute_cols(kernel, src: torch.Tensor, inv: torch.Tensor, dst: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """dst[t, m] = src[t, inv[m]]; from a float32 src (the FINISH build) plus bias[m], rounded."""
    t, width = src.shape
    rows = PERMUTE_ROWS[src.dtype == torch.float32]
    kernel(grid=(math.ceil(t / rows), 1, 1), block=(256, 1, 1), shared_mem=rows * width * src.element_size(),
           args=[src, inv, dst, t, width, dst.shape[1], bias if bias is not None else dst, int(bias is not None)])
    return dst


def launch(v: Variant, kernel, p: dict, x: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor):
    t = x.shape[0]
    sets = math.ceil(p["groups"] / v.gpc)
    grid = (math.ceil(sets / v.cl) * v.cl, math.ceil(t / BT), v.splits)  # a cluster's CTAs all run, groups or not
    kernel(grid=grid, block=(64 * v.gpc, 1, 1), shared_mem=v.smem,
           args=[x, p["wfrag"], p["cfrag"], p["step_ptr"], p["perm"], bias if bias is not None else x, out,
                 t, p["k"], p["m"], p["groups"], p["chunks"], int(bias is not None)])
    return out
