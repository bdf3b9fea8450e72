"""Other libraries' answers to the same layer, timed beside shflbw by run_linear.py (issue #5):
torch 2:4 semi-structured (cuSPARSELt) at 50 %, torch BSR at the case's sparsity, and dense
F.linear under torch.compile.

Each builder returns candidates: (variant, fn, reference) with the reference in the layout fn
returns (the '-wxT' variants put the sparse operand first, W @ X^T, and return feature-major
output, the order cuSPARSELt and torch's Triton BSR kernel serve natively). run_linear.py gates
and times them; a builder or call that this torch build or shape cannot run becomes an
'unavailable' row instead of a crash. The builders run on CPU too, so the tests check them.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from shflbw.prune import patterns


def block_mask(weight: torch.Tensor, sparsity: float, block: int) -> torch.Tensor:
    """Keep the ``round((1 - sparsity) * blocks)`` block x block tiles of largest squared norm
    (bool, weight's shape): the BSR baseline at the same sparsity as the Shfl-BW case."""
    m, k = weight.shape
    if m % block or k % block:  # BSR holds whole blocks only (prune's block pattern pads the edges)
        raise ValueError(f"block {block} does not divide the weight {tuple(weight.shape)}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return patterns.block(weight.float().pow(2), block, 1 - sparsity)


def bsr_candidates(x: torch.Tensor, weight: torch.Tensor, sparsity: float, block: int = 64) -> list[tuple]:
    """torch BSR on the block-magnitude mask: ``F.linear`` on a BSR weight (what a user writes;
    torch picks the kernel), and on CUDA its Triton kernel called directly (``bsr_dense_mm``)."""
    wm = weight * block_mask(weight, sparsity, block)
    with warnings.catch_warnings():  # "Sparse BSR tensor support is in beta state", once per case
        warnings.simplefilter("ignore", UserWarning)
        w_bsr = wm.to_sparse_bsr((block, block))
    ref = F.linear(x.float(), wm.float())
    out = [(f"torch-bsr{block}", lambda: F.linear(x, w_bsr), ref)]
    if x.is_cuda:
        from torch.sparse._triton_ops import bsr_dense_mm

        xt = x.t().contiguous()
        out.append((f"torch-bsr{block}-wxT", lambda: bsr_dense_mm(w_bsr, xt), ref.t()))
    return out


def semi_structured_candidates(x: torch.Tensor, weight: torch.Tensor) -> list[tuple]:
    """torch 2:4 (cuSPARSELt, CUDA only) on a 2:4 magnitude mask of the same weight."""
    from torch.sparse import to_sparse_semi_structured

    wm = weight * patterns.n_of_m(weight.abs(), 2, 4)
    ws = to_sparse_semi_structured(wm)
    ref = F.linear(x.float(), wm.float())
    xt = x.t().contiguous()
    return [("torch-2:4", lambda: F.linear(x, ws), ref), ("torch-2:4-wxT", lambda: torch.mm(ws, xt), ref.t())]


_compiled: dict = {}


def compile_static(fn, key, **options):
    """``torch.compile(fn, dynamic=False, **options)``, compiled anew for each ``key`` (the shapes).
    Dense baselines compile for their exact shape. One shape is kept at a time (the registries walk
    sparsities within a shape), and dynamo is reset between shapes: it keys its cache on the code
    object, and past its recompile limit (8) it would run ``fn`` eagerly, saying so only in a log
    warning, and the "compiled" rows would time eager code."""
    if key not in _compiled:
        _compiled.clear()
        torch._dynamo.reset()
        _compiled[key] = torch.compile(fn, dynamic=False, **options)
    return _compiled[key]


def _linear(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.linear(a, b)


def dense_compiled_candidates(x: torch.Tensor, weight: torch.Tensor) -> list[tuple]:
    """Dense F.linear under torch.compile with max-autotune (Triton matmul templates against
    cuBLAS, the faster kept). Autotuning compiles each shape anew, so run_linear.py runs it only
    with --dense-compiled."""
    fn = compile_static(_linear, (tuple(x.shape), tuple(weight.shape), x.dtype, x.device),
                        mode="max-autotune-no-cudagraphs")
    return [("dense-compiled", lambda: fn(x, weight), F.linear(x.float(), weight.float()))]
