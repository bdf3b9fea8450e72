"""Experiment (session 18): the token-major CUDA kernel of tm_mma.cu beside dense and shflbw.linear.

    python prototype/tm_mma.py --out tm_mma.json          # on a GPU: gate, then time
    python prototype/tm_mma.py --emulate                  # anywhere: packing + lane-level simulation
    python prototype/tm_mma.py --dry-run                  # anywhere: this harness and tm_mlp.py's,
                                                          # kernels emulated, times faked

Why: issue #5's token-major bar (2.0x at 75 %, T >= 2048) is unmet at V = 64 (1.52-1.89x on the
H200, 1.19-1.52x on the H100) because the Triton path transposes X and the output around a
feature-major kernel (57 us of 165 at 4096^2 on the H100). tm_mma.cu gathers from a staged
token-major tile instead. Before it is timed, every variant's output (NaN-poisoned first) is
compared with F.linear on the masked weight in float32; a wrong one reports no time. Times are
CUDA-graph replays (median of do_bench), dense first, in one process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.format.matrix import group_ids  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402

BT, VEC = 128, 64
DEVICE = "cuda"  # dry_run() sets "cpu"
_HERE = Path(__file__).parent
COMMON = (_HERE / "tm_mma_common.cuh").read_text()
SOURCES = {"tm": (COMMON + (_HERE / "tm_mma.cu").read_text(), "shflbw_tm_mma"),
           "cluster": (COMMON + (_HERE / "tm_mma_cluster.cu").read_text(), "shflbw_tm_cluster")}


def fragment_index():
    """(k, n) of each B-fragment element a lane holds, [32 lanes, 8 n-tiles, 4]: mma.m16n8k16's
    B operand gives lane (r8 * 4 + q) the elements (k = 2q, 2q+1, 2q+8, 2q+9; n = 8j + r8)."""
    lane = torch.arange(32)
    q, r8 = lane % 4, lane // 4
    kq = torch.stack([2 * q, 2 * q + 1, 2 * q + 8, 2 * q + 9], -1)  # [32, 4]
    kk = kq[:, None, :].expand(32, 8, 4)
    nn = (8 * torch.arange(8)[None, :, None] + r8[:, None, None]).expand(32, 8, 4)
    slots = torch.stack([torch.tensor([2 * i, 2 * i + 1, 2 * i + 8, 2 * i + 9]) for i in range(4)])  # [q, 4]
    return kk, nn, slots


# The four column slots each warp-wide 2-byte load reads (slot 2q, 2q+1, 2q+8 or 2q+9 for q = 0..3).
QUAD_SLOTS = torch.tensor([[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]])


def straddle_steps(col: torch.Tensor, group_ptr: torch.Tensor, kc: int):
    """k-steps that may run over into the next chunk: each takes up to 16 of its group's next kept
    columns that lie in the chunk of its first one or the chunk after, so a step is padded only
    where its group's columns thin out (fewer than 16 in two chunks) or end. Returns each entry's
    (step, slot) and each step's (group, first chunk). Host loop over steps (packing is one-time)."""
    cols = col.cpu().numpy()
    ptr = group_ptr.cpu().numpy()
    step_of = np.empty(cols.size, dtype=np.int64)
    slot_of = np.empty(cols.size, dtype=np.int64)
    groups, bases = [], []
    for g in range(ptr.size - 1):
        a, b = int(ptr[g]), int(ptr[g + 1])
        gc = cols[a:b]
        i = 0
        while i < b - a:
            base = int(gc[i]) // kc
            j = min(i + 16, int(np.searchsorted(gc, (base + 2) * kc)))
            step_of[a + i:a + j] = len(groups)
            slot_of[a + i:a + j] = np.arange(j - i)
            groups.append(g)
            bases.append(base)
            i = j
    as_long = lambda v: torch.as_tensor(np.asarray(v, dtype=np.int64), device=col.device)  # noqa: E731
    return as_long(step_of), as_long(slot_of), as_long(groups), as_long(bases)


def quad_positions(cell: torch.Tensor, residue: torch.Tensor, n_cells) -> torch.Tensor:
    """Each entry's position inside its cell (entries of a cell contiguous, in order) after dealing
    the cell's columns round-robin by residue: positions 4i .. 4i + 3 take residues 0, 1, 2, 3 while
    each lasts, so consecutive quads of positions hold distinct residues as far as the counts allow."""
    nnz, dev = cell.numel(), cell.device
    n_cells = int(n_cells)
    key2 = cell * 4 + residue
    by_residue = torch.sort(key2, stable=True).indices
    start2 = torch.zeros(n_cells * 4 + 1, dtype=torch.long, device=dev)
    start2[1:] = torch.bincount(key2, minlength=n_cells * 4).cumsum(0)
    rank2 = torch.empty(nnz, dtype=torch.long, device=dev)
    rank2[by_residue] = torch.arange(nnz, device=dev) - start2[key2[by_residue]]
    new_pos = torch.sort(cell * 4 * (nnz + 1) + rank2 * 4 + residue, stable=True).indices
    cell_start = torch.zeros(n_cells + 1, dtype=torch.long, device=dev)
    cell_start[1:] = torch.bincount(cell, minlength=n_cells).cumsum(0)
    pos = torch.empty(nnz, dtype=torch.long, device=dev)
    pos[new_pos] = torch.arange(nnz, device=dev) - cell_start[cell[new_pos]]
    return pos


def prepare(w: ShflBWMatrix, kc: int, order: str = "sorted", straddle: bool = False) -> dict:
    """The kernel's operands: k-steps of 16 kept columns per (group, chunk of kc columns).

    ``straddle``: steps may take columns of the next chunk too (straddle_steps; kernels built with
    -DSTRADDLE keep two chunks staged), instead of padding each (group, chunk)'s last step:
    at 75 %, KC = 256 the padding adds 11 % to the MMAs and the weight bytes, at 87.5 % 23 %.

    ``order="quads"`` reorders each (group, chunk)'s columns so that the four read by one load fall
    in different shared-memory bank quads: with a row stride of 4 words mod 32, the 8 token rows of a
    load cover the banks of one residue of (column // 2) mod 4, so four columns with distinct
    residues are read in one wavefront instead of up to four.
    """
    if w.vector != VEC:
        raise ValueError(f"tm_mma is written for V = {VEC}, got {w.vector}")
    m, k = w.shape
    dev = w.values.device
    n_groups, n_chunks = w.num_groups, math.ceil(k / kc)
    col = w.col_idx.long()
    nnz = col.numel()
    chunk = col // kc
    key = group_ids(w.group_ptr) * n_chunks + chunk
    count = torch.bincount(key, minlength=n_groups * n_chunks)
    steps = (count + 15) // 16
    step_ptr = torch.zeros(n_groups * n_chunks + 1, dtype=torch.long, device=dev)
    step_ptr[1:] = steps.cumsum(0)
    cell_start = torch.zeros_like(step_ptr)
    cell_start[1:] = count.cumsum(0)
    rank = torch.arange(nnz, device=dev) - cell_start[key]
    if straddle:
        step, slot, step_group, step_base = straddle_steps(col, w.group_ptr, kc)
        step_ptr = torch.zeros(n_groups * n_chunks + 1, dtype=torch.long, device=dev)
        step_ptr[1:] = torch.bincount(step_group * n_chunks + step_base, minlength=n_groups * n_chunks).cumsum(0)
        chunk = step_base[step]  # offsets count from the step's first chunk: 0 .. 2 * kc - 1
        if order == "quads":  # within each step only (the buffers' bank maps agree: stage size = 0 mod 32 words)
            slot = QUAD_SLOTS.to(dev).flatten()[quad_positions(step, ((col - chunk * kc) // 2) % 4, step.max() + 1)]
        elif order != "sorted":
            raise ValueError(f"order must be 'sorted' or 'quads', got {order!r}")
    elif order == "quads":
        rank = quad_positions(key, ((col - chunk * kc) // 2) % 4, n_groups * n_chunks)
        step = step_ptr[key] + rank // 16
        slot = QUAD_SLOTS.to(dev).flatten()[rank % 16]
    elif order == "sorted":
        step, slot = step_ptr[key] + rank // 16, rank % 16
    else:
        raise ValueError(f"order must be 'sorted' or 'quads', got {order!r}")
    n_steps = int(step_ptr[-1])
    cols16 = torch.zeros(n_steps, 16, dtype=torch.long, device=dev)
    cols16[step, slot] = col - chunk * kc
    filled = torch.zeros(n_steps, 16, dtype=torch.bool, device=dev)
    filled[step, slot] = True
    first = cols16.gather(1, filled.to(torch.int8).argmax(1, keepdim=True))
    cols16 = torch.where(filled, cols16, first)  # padding reads a kept column, times 0
    w16 = torch.zeros(n_steps, 16, VEC, dtype=w.values.dtype, device=dev)
    w16[step, slot] = w.values
    kk, nn, slots = fragment_index()
    wfrag = w16[:, kk.to(dev), nn.to(dev)].contiguous()  # [S, 32, 8, 4]
    cfrag = cols16[:, slots.to(dev)].to(torch.int16).contiguous()  # [S, 4, 4]
    return {"wfrag": wfrag, "cfrag": cfrag, "step_ptr": step_ptr.to(torch.int32), "perm": w.perm.to(torch.int32),
            "m": m, "k": k, "groups": n_groups, "chunks": n_chunks, "kc": kc, "pad": n_steps * 16 / max(nnz, 1),
            "straddle": straddle}


def emulate(p: dict, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """What the kernel computes, step by step from the packed fragments (float32, any device)."""
    kk, nn, slots = fragment_index()
    t = x.shape[0]
    out_p = torch.zeros(t, p["groups"] * VEC, dtype=torch.float32)
    sp = p["step_ptr"].long()
    for g in range(p["groups"]):
        for c in range(p["chunks"]):
            xc = torch.zeros(t, 2 * p["kc"])  # this chunk and the next (straddling steps read both)
            part = x[:, c * p["kc"]:(c + 2) * p["kc"]].float()
            xc[:, :part.shape[1]] = part
            for st in range(int(sp[g * p["chunks"] + c]), int(sp[g * p["chunks"] + c + 1])):
                b = torch.zeros(16, VEC)
                b[kk, nn] = p["wfrag"][st].float()
                cols = torch.zeros(16, dtype=torch.long)
                cols[slots] = p["cfrag"][st].long()
                out_p[:, g * VEC:(g + 1) * VEC] += xc[:, cols] @ b
    out = torch.empty(t, p["m"])
    out[:, p["perm"].long()] = out_p[:, :p["m"]]
    return out + (bias.float() if bias is not None else 0)


def wavefronts(p: dict) -> float:
    """Mean shared-memory wavefronts of one warp-wide gather load (the bank model of QUAD_SLOTS):
    the most distinct 4-byte words among its four columns that share a residue (word mod 4)."""
    _, _, slots = fragment_index()
    cols = torch.zeros(p["cfrag"].shape[0], 16, dtype=torch.long)
    cols[:, slots] = p["cfrag"].long().cpu()
    words = (cols[:, QUAD_SLOTS] // 2).reshape(-1, 4).tolist()  # one row per load
    if not words:
        return 0.0
    return sum(max(len({w for w in load if w % 4 == r}) for r in range(4)) for load in words) / len(words)


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


CASES = [  # (out, in, tokens, sparsity, dtype)
    (4000, 4088, 1000, 0.75, "bfloat16"),  # tails everywhere: correctness
    (4096, 4096, 4096, 0.75, "bfloat16"), (11008, 4096, 4096, 0.75, "bfloat16"),
    (4096, 11008, 4096, 0.75, "bfloat16"), (14336, 4096, 4096, 0.75, "bfloat16"),
    (4096, 4096, 4096, 0.5, "bfloat16"), (4096, 4096, 4096, 0.875, "bfloat16"), (4096, 4096, 2048, 0.75, "bfloat16"),
    (4096, 4096, 512, 0.75, "bfloat16"), (11008, 4096, 512, 0.75, "bfloat16"), (4096, 4096, 128, 0.75, "bfloat16"),
    (4096, 11008, 256, 0.75, "bfloat16"),
    (4000, 4088, 1000, 0.75, "float16"), (4096, 4096, 4096, 0.75, "float16"),
]
VARIANTS = [
    Variant("tm", 256, 2, "sorted"), Variant("tm", 256, 2), Variant("tm", 256, 3), Variant("tm", 128, 3), Variant("tm", 128, 3, gpc=2),
    Variant("tm", 256, 2, dtype="float16"), Variant("tm", 128, 3, straddle=True), Variant("tm", 256, 3, straddle=True),
    Variant("tm", 256, 2, out="group"), Variant("tm", 256, 2, out="permute"), Variant("tm", 256, 3, straddle=True, out="permute"),
    Variant("tm", 128, 3, gpc=2, out="permute", max_tokens=512),
    Variant("tm", 128, 3, gpc=2, out="splitk", splits=2, max_tokens=512),
    Variant("tm", 128, 3, gpc=2, out="splitk", splits=4, max_tokens=512),
    Variant("tm", 128, 3, out="splitk", splits=4, max_tokens=512),
    Variant("cluster", 256, 2), Variant("cluster", 256, 2, cl=2), Variant("cluster", 128, 3, cl=2),
    Variant("cluster", 256, 3, cl=2), Variant("cluster", 128, 3, cl=2, gpc=2), Variant("cluster", 128, 4, cl=4, gpc=2),
    Variant("cluster", 256, 2, cl=2, dtype="float16"), Variant("cluster", 128, 3, cl=2, straddle=True),
    Variant("cluster", 256, 3, cl=2, straddle=True), Variant("cluster", 256, 2, cl=2, out="group"),
    Variant("cluster", 256, 2, cl=2, out="permute"), Variant("cluster", 256, 3, cl=2, straddle=True, out="permute"),
]


def diagnose(v: Variant, kernel) -> dict:
    """One group, one CTA: the error by (token mod 16, output position mod 8), the fragment's own
    coordinates, so that a wrong lane mapping shows which index it mixes up."""
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(64, 256, generator=gen).to(torch.bfloat16)
    mask, perm = random_shflbw_mask(64, 256, VEC, 0.25, generator=gen)
    w = ShflBWMatrix.from_dense(weight.to(DEVICE), mask.to(DEVICE), perm.to(DEVICE), vector=VEC)
    x = torch.randn(128, 256, generator=gen).to(torch.bfloat16).to(DEVICE)
    p = prepare(w, v.kc, v.order, v.straddle)
    out = torch.full((128, 64), float("nan"), device=DEVICE, dtype=torch.bfloat16)
    launch(v, kernel, p, x, None, out)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    ref = F.linear(x.float(), (weight.float() * mask).to(DEVICE))
    bad = ((out.float() - ref).abs() > 0.05 * ref.abs().max()) | ~torch.isfinite(out.float())
    inv = torch.empty(64, dtype=torch.long)
    inv[perm] = torch.arange(64)  # original row -> permuted position
    pos = inv.to(DEVICE)[None, :].expand(128, 64)
    tok = torch.arange(128, device=DEVICE)[:, None].expand(128, 64)
    table = torch.zeros(16, 8)
    for a in range(16):
        for b in range(8):
            sel = (tok % 16 == a) & (pos % 8 == b)
            table[a, b] = bad[sel].float().mean()
    print(f"diagnosis: {int(bad.sum())} of {bad.numel()} wrong; by (token % 16, position % 8):\n{table}", flush=True)
    return {"wrong": int(bad.sum()), "by_token16_pos8": table.tolist()}


def run_gpu(out_path: str, kinds: tuple[str, ...]) -> int:
    from benchmarks.run_linear import stamp
    from benchmarks.timing import GATE, median_us, rel_error
    from shflbw.kernels.linear import linear_fwd

    kernels = {}
    for v in (v for v in VARIANTS if v.kind in kinds):
        try:
            kernels[v] = compile_variant(v)
        except Exception as e:  # noqa: BLE001 - a variant that does not build is reported, the others run
            print(f"variant {v} did not build: {type(e).__name__}: {str(e)[:2000]}", flush=True)
    permute = compile_permute() if any(v.out == "permute" for v in kernels) else None
    finish = {d: compile_permute(True, d == "float16") for d in {v.dtype for v in kernels if v.out == "splitk"}}
    first = [next((v for v in kernels if v.kind == kind and v.dtype == "bfloat16" and v.out == "scatter"), None)
             for kind in sorted({v.kind for v in kernels})]
    result = {"stamp": stamp(), "rows": [], "diagnosis": {v.name: diagnose(v, kernels[v]) for v in first if v}}
    gen = torch.Generator().manual_seed(0)
    for m, k, t, sparsity, dtype_name in CASES:
        dtype = getattr(torch, dtype_name)
        weight = torch.randn(m, k, generator=gen).to(dtype)
        mask, perm = random_shflbw_mask(m, k, VEC, 1 - sparsity, generator=gen)
        weight, mask, perm = weight.to(DEVICE), mask.to(DEVICE), perm.to(DEVICE)
        w = ShflBWMatrix.from_dense(weight, mask, perm, vector=VEC)
        x = torch.randn(t, k, device=DEVICE).to(dtype)
        bias = torch.randn(m, device=DEVICE).to(dtype)
        masked = (weight * mask).float()
        ref = F.linear(x.float(), masked, bias.float())
        case = f"{m}x{k} T={t} s={sparsity} {dtype_name}"
        dense_us = median_us(lambda: F.linear(x, weight, bias), graph=True)
        rows = [("dense", dense_us, 0.0)]
        args = (w.values, w.col_idx, w.group_ptr, w.perm, bias, m)
        err = rel_error(linear_fwd(x, *args), ref)
        tol = GATE[dtype]
        rows.append(("shflbw.linear", median_us(lambda: linear_fwd(x, *args), graph=True) if err < tol else None, err))
        width = w.num_groups * VEC
        ref_g = torch.zeros(t, width, device=DEVICE)  # group order: column p holds original row perm[p]
        ref_g[:, :m] = ref[:, w.perm.long()]
        inv = torch.empty(m, dtype=torch.int32, device=DEVICE)
        inv[w.perm.long()] = torch.arange(m, dtype=torch.int32, device=DEVICE)
        for v, kernel in kernels.items():
            if v.dtype != dtype_name or (v.max_tokens and t > v.max_tokens):
                continue
            p = prepare(w, v.kc, v.order, v.straddle)
            out = torch.full((t, m if v.out != "group" else width), float("nan"), device=DEVICE, dtype=dtype)
            if v.out == "splitk":
                sums = torch.empty(t, width, device=DEVICE, dtype=torch.float32)

                def run(v=v, kernel=kernel, p=p, out=out, sums=sums):
                    sums.zero_()
                    return permute_cols(finish[v.dtype], launch(v, kernel, p, x, bias, sums), inv, out, bias)
            elif v.out == "permute":
                out_g = torch.empty(t, width, device=DEVICE, dtype=dtype)

                def run(v=v, kernel=kernel, p=p, out=out, out_g=out_g):
                    return permute_cols(permute, launch(v, kernel, p, x, bias, out_g), inv, out)
            else:
                def run(v=v, kernel=kernel, p=p, out=out):
                    return launch(v, kernel, p, x, bias, out)
            err = rel_error(run(), ref_g if v.out == "group" else ref)
            us = median_us(run, graph=True) if err < tol else None
            rows.append((f"{v.name} pad{p['pad']:.2f}", us, err))
            del p, out, run
        record(result, case, rows, dense_us, out_path)
    return 0


def record(result: dict, case: str, rows: list, base_us: float, out_path: str, width: int = 36) -> None:
    """Append one case's (variant, us, error) rows with speedups against base_us, print them, save all."""
    for name, us, err in rows:
        sp = base_us / us if us else None
        result["rows"].append({"case": case, "variant": name, "us": us, "error": err, "speedup": sp})
        print(f"{case:36s} {name:{width}s} " + (f"{us:8.1f} us {sp:5.2f}x" if us else f"WRONG err={err:.3g}"), flush=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


def simulate_lanes(p: dict, x: torch.Tensor, bias: torch.Tensor | None, group_out: bool = False) -> torch.Tensor:
    """The CUDA code lane by lane (compute_steps, store_tile): each lane's A registers gathered from
    the staged tile and B registers read from wfrag as the kernel does, then mma.m16n8k16 applied by
    the PTX ISA's fragment layout (A: element i of lane (g, t) at row g + 8 * (i // 2 % 2), column
    2t + i % 2 + 8 * (i // 4); B: element i at row 2t + i % 2 + 8 * (i // 2), column g; C: element i
    at row g + 8 * (i // 2), column 2t + i % 2). Slow; for small shapes."""
    t_total, kc, stride = x.shape[0], p["kc"], p["kc"] + 8
    sp = p["step_ptr"].long().tolist()
    wfrag = p["wfrag"].view(torch.int16).reshape(-1, 32, 16, 2)  # [S, lane, register, half]
    cfrag = p["cfrag"].long() & 0xFFFF
    out = torch.full((t_total, p["groups"] * VEC if group_out else p["m"]), float("nan"))
    for t0 in range(0, t_total, BT):
        for g in range(p["groups"]):
            for slab in range(2):
                acc = torch.zeros(4, 8, 32, 4)  # [mt, j, lane, c-element]
                for c in range(p["chunks"]):
                    tiles = []  # the staged chunks c and c + 1 (zeros past T and K), as the kernel's buffers
                    for cc in (c, c + 1):
                        tile = torch.zeros(BT, stride)
                        part = x[t0:t0 + BT, cc * kc:(cc + 1) * kc].float()
                        tile[:part.shape[0], :part.shape[1]] = part
                        tiles.append(tile[slab * 64:])

                    def xv(row, off):  # the kernel's address: off < KC in chunk c's buffer, else chunk c + 1's
                        return tiles[0][row, off] if off < kc else tiles[1][row, off - kc]

                    for st in range(sp[g * p["chunks"] + c], sp[g * p["chunks"] + c + 1]):
                        b_bits = wfrag[st]  # the bf16 bits each lane loads
                        a_mat = torch.zeros(4, 16, 16)
                        b_mat = torch.zeros(8, 16, 8)
                        for lane in range(32):
                            q, r8 = lane % 4, lane // 4
                            c0, c1, c2, c3 = cfrag[st, q].tolist()  # cc.x low/high, cc.y low/high
                            for mt in range(4):
                                row0, row1 = mt * 16 + r8, mt * 16 + r8 + 8
                                regs = [(xv(row0, c0), xv(row0, c1)), (xv(row1, c0), xv(row1, c1)),
                                        (xv(row0, c2), xv(row0, c3)), (xv(row1, c2), xv(row1, c3))]
                                for i in range(8):
                                    a_mat[mt, r8 + 8 * (i // 2 % 2), 2 * q + i % 2 + 8 * (i // 4)] = regs[i // 2][i % 2]
                            halves = b_bits[lane].to(torch.int32) & 0xFFFF  # [16 registers, 2]
                            vals = (halves << 16).view(torch.float32)  # bf16 bits -> float32
                            for j in range(8):
                                for i in range(4):
                                    reg = 2 * j + i // 2
                                    b_mat[j, 2 * q + i % 2 + 8 * (i // 2), r8] = vals[reg, i % 2]
                        for mt in range(4):
                            for j in range(8):
                                cmat = a_mat[mt] @ b_mat[j]  # [16, 8]
                                for lane in range(32):
                                    q, r8 = lane % 4, lane // 4
                                    for i in range(4):
                                        acc[mt, j, lane, i] += cmat[r8 + 8 * (i // 2), 2 * q + i % 2]
                for lane in range(32):  # store_tile
                    q, r8 = lane % 4, lane // 4
                    for mt in range(4):
                        for h in range(2):
                            tok = t0 + slab * 64 + mt * 16 + r8 + 8 * h
                            if tok >= t_total:
                                continue
                            for j in range(8):
                                for e in range(2):
                                    pos = g * VEC + 8 * j + 2 * q + e
                                    orow = int(p["perm"][pos]) if pos < p["m"] else -1
                                    bv = float(bias[orow]) if bias is not None and orow >= 0 else 0.0
                                    value = float(acc[mt, j, lane, 2 * h + e]) + bv
                                    if group_out:  # GROUP_OUT: every position, padding rows included
                                        out[tok, g * VEC + 8 * j + 2 * q + e] = value
                                    elif orow >= 0:
                                        out[tok, orow] = value
    return out


class EmulatedKernel:
    """Stands in for a compiled variant in dry_run(): the kernel's arguments in, emulate()'s result out
    in the layout the build options say (scatter, group order, GELU)."""

    def __init__(self, v: Variant):
        self.v = v

    def __call__(self, grid, block, shared_mem, args):
        x, wfrag, cfrag, step_ptr, perm, bias, out, t, k, m, groups, chunks, has_bias = args
        p = {"wfrag": wfrag, "cfrag": cfrag, "step_ptr": step_ptr, "perm": perm, "m": m, "k": k,
             "groups": groups, "chunks": chunks, "kc": self.v.kc}
        if self.v.out == "splitk":  # every split's float32 sums added into the zeroed buffer, no bias
            y = emulate(p, x, None)
            out[:, :m] += y[:, perm.long()]
            return
        y = emulate(p, x, bias if has_bias else None)  # [t, m], original order, bias added
        y = F.gelu(y, approximate="tanh") if self.v.gelu else y
        if self.v.out == "scatter":
            out.copy_(y)
        else:
            y_g = torch.zeros(t, groups * VEC)
            y_g[:, :m] = y[:, perm.long()]
            out.copy_(y_g)  # padding rows: act(0) = 0


class EmulatedPermute:
    def __init__(self, finish: bool = False, half: bool = False):
        pass

    def __call__(self, grid, block, shared_mem, args):
        src, inv, dst, t, width, m, bias, has_bias = args
        dst.copy_(src[:, inv.long()].float() + (bias.float() if has_bias else 0))


def dry_run() -> int:
    """The GPU harness (run_gpu, tm_mlp.run_gpu) on the CPU with small shapes: kernels emulated,
    times faked, so a slip in its own code is found here and not in a scarce device call."""
    global DEVICE, CASES
    import benchmarks.run_linear
    import benchmarks.timing
    import tm_mlp

    DEVICE, tm_mlp.DEVICE = "cpu", "cpu"
    CASES = [(200, 136, 70, 0.75, "bfloat16"), (128, 256, 130, 0.5, "float16"), (136, 520, 300, 0.75, "bfloat16")]
    tm_mlp.CASES = [(64, 200)]
    # this module runs as __main__, and tm_mlp imports it again as tm_mma: patch both copies
    for module in {sys.modules[__name__], sys.modules.get("tm_mma")} - {None}:
        module.DEVICE = "cpu"
        module.compile_variant = EmulatedKernel
        module.compile_permute = EmulatedPermute
    benchmarks.timing.median_us = lambda fn, graph=False, rep=100: (fn(), 1.0)[1]
    benchmarks.run_linear.stamp = lambda: {"dry_run": True}
    import shflbw.kernels.linear
    from shflbw.ops.reference import linear_fwd_ref

    shflbw.kernels.linear.linear_fwd = linear_fwd_ref
    torch.compile = lambda fn, **kw: fn
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rc = run_gpu(os.path.join(d, "tm.json"), ("tm", "cluster"))
        rows = json.load(open(os.path.join(d, "tm.json")))["rows"]
        rc |= tm_mlp.run_gpu(os.path.join(d, "mlp.json"), [70], [0.75])
        rows += json.load(open(os.path.join(d, "mlp.json")))["rows"]
    wrong = [r for r in rows if r["us"] is None]
    print(f"dry run: {len(rows)} rows, {len(wrong)} wrong" + "".join(f"\n  {r['case']} {r['variant']}" for r in wrong))
    return rc or int(bool(wrong))


def run_emulate() -> int:
    gen = torch.Generator().manual_seed(1)
    for m, k, t, kc, empty, order, straddle in [
            (200, 72, 5, 64, (1,), "sorted", False), (128, 300, 3, 128, (), "sorted", False),
            (64, 40, 2, 64, (0,), "sorted", False), (200, 300, 5, 64, (1,), "quads", False),
            (130, 520, 3, 256, (), "quads", False), (200, 300, 5, 64, (1,), "sorted", True),
            (130, 1100, 3, 256, (), "sorted", True), (130, 1100, 3, 256, (2,), "quads", True)]:
        weight = torch.randn(m, k, generator=gen)
        mask, perm = random_shflbw_mask(m, k, VEC, 0.3, generator=gen, empty_groups=empty)
        w = ShflBWMatrix.from_dense(weight.to(torch.bfloat16), mask, perm, vector=VEC)
        x = torch.randn(t, k, generator=gen).to(torch.bfloat16)
        bias = torch.randn(m, generator=gen)
        p = prepare(w, kc, order, straddle)
        ref = F.linear(x.float(), (weight.to(torch.bfloat16).float() * mask), bias)
        got = emulate(p, x, bias)
        err = ((got - ref).norm() / ref.norm()).item()
        print(f"emulate {m}x{k} T={t} kc={kc} empty={empty} {order}{' straddle' if straddle else ''}: "
              f"rel err {err:.2e}, pad {p['pad']:.2f}, "
              f"wavefronts per load {wavefronts(p):.2f}")
        if not err < 1e-5:
            return 1
    # the kernel's own lane arithmetic, on two chunks, a token tail and a group tail
    weight = torch.randn(100, 512, generator=gen)
    mask, perm = random_shflbw_mask(100, 512, VEC, 0.3, generator=gen)
    w = ShflBWMatrix.from_dense(weight.to(torch.bfloat16), mask, perm, vector=VEC)
    x = torch.randn(70, 512, generator=gen).to(torch.bfloat16)
    bias = torch.randn(100, generator=gen).to(torch.bfloat16)
    ref = F.linear(x.float(), weight.to(torch.bfloat16).float() * mask, bias.float())
    for order, straddle, kc in (("sorted", False, 256), ("quads", False, 256), ("quads", True, 128)):
        got = simulate_lanes(prepare(w, kc, order, straddle), x, bias)
        err = ((got - ref).norm() / ref.norm()).item()
        print(f"lane simulation 100x512 T=70 kc={kc} {order}{' straddle' if straddle else ''}: rel err {err:.2e}")
        if not err < 1e-5:
            return 1
    p = prepare(w, 256, "quads")
    got = simulate_lanes(p, x, bias, group_out=True)
    ref_g = torch.zeros(70, p["groups"] * VEC)
    ref_g[:, :100] = ref[:, perm]
    err = ((got - ref_g).norm() / ref_g.norm()).item()
    print(f"lane simulation, group-order output: rel err {err:.2e}")
    if not err < 1e-5:
        return 1
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tm_mma.json")
    ap.add_argument("--emulate", action="store_true")
    ap.add_argument("--kinds", default="tm,cluster", help="kernels to run: tm, cluster (default: both)")
    ap.add_argument("--dry-run", action="store_true", help="the harness on the CPU, kernels emulated")
    a = ap.parse_args()
    if a.dry_run:
        sys.exit(dry_run())
    sys.exit(run_emulate() if a.emulate else run_gpu(a.out, tuple(a.kinds.split(","))))
