"""``shflbw.prune``: one call for every pattern, returning mask, permutation and kept importance."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from shflbw.prune import patterns
from shflbw.prune.search import shfl_bw_search

PATTERNS = ("shfl_bw", "unstructured", "vector", "block", "n:m")


@dataclass(frozen=True)
class PruneResult:
    mask: torch.Tensor  # bool, M x K, original row order
    perm: torch.Tensor  # int64, M: rows in group order (identity for patterns without a shuffle)
    kept_importance: float  # fraction of the total importance the mask keeps
    pattern: str
    vector: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.mask.double().mean().item()


def _check(weight, sparsity, vector, importance):
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.dtype.is_floating_point:
        raise ValueError(f"weight must be a 2-D float tensor, got {getattr(weight, 'shape', type(weight).__name__)}")
    if weight.numel() == 0:
        raise ValueError(f"weight is empty (shape {tuple(weight.shape)}): there is nothing to prune")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight holds NaN or inf")
    if importance is not None:
        if not isinstance(importance, torch.Tensor) or importance.shape != weight.shape:
            raise ValueError(f"importance must be a tensor of the weight's shape {tuple(weight.shape)}")
        if not bool(torch.isfinite(importance).all()) or bool((importance < 0).any()):
            raise ValueError("importance must be finite and non-negative")
    if isinstance(vector, bool) or not isinstance(vector, int) or vector <= 0 or vector % 16:
        raise ValueError(f"vector (V) must be a positive multiple of 16, got {vector!r}")


def prune(
    weight: torch.Tensor,
    sparsity: float,
    vector: int = 64,
    pattern: str = "shfl_bw",
    importance: torch.Tensor | None = None,
    balanced: bool = False,
    seed: int = 0,
    *,
    block_size: int = 32,
    column_block: int = 1,
    time_budget: float | None = 30.0,
    refine: bool = True,
    progress: bool = False,
) -> PruneResult:
    """Choose which weights to keep. Importance defaults to the squared magnitude.

    pattern: "shfl_bw" (V x 1 vectors after a row permutation), "unstructured", "vector"
    (V x 1, consecutive rows), "block" (block_size x block_size), "N:M" such as "2:4" ("n:m" means 2:4).
    Shfl-BW search knobs: ``time_budget`` in seconds per call (None: no limit), ``refine=False``
    for the alternation alone, ``progress=True`` for a progress bar. See prune/search.py.
    ``column_block=c`` keeps or prunes runs of c consecutive input columns together (for a
    flattened Conv2d weight, c = R*S keeps whole R x S kernels): the search runs on the importance
    summed over each run, and the mask is expanded back.
    """
    _check(weight, sparsity, vector, importance)
    imp = (weight.detach().float() ** 2 if importance is None else importance.detach().float()).cpu()
    density = 1.0 - float(sparsity)
    m = weight.shape[0]
    identity = torch.arange(m)
    if isinstance(column_block, bool) or not isinstance(column_block, int) or column_block < 1:
        raise ValueError(f"column_block must be a positive int, got {column_block!r}")
    if weight.shape[1] % column_block:
        raise ValueError(f"column_block={column_block} does not divide in_features={weight.shape[1]}")
    nm = re.fullmatch(r"(\d+):(\d+)", pattern) if isinstance(pattern, str) else None
    if pattern not in PATTERNS and not nm:
        raise ValueError(f"pattern must be one of {PATTERNS} or 'N:M' like '2:4', got {pattern!r}")
    torch.manual_seed(seed)  # the search is deterministic today; the seed is for restarts (TODO(#3))
    search_imp = imp
    if column_block > 1:
        if pattern not in ("shfl_bw", "vector", "unstructured"):
            raise ValueError(f"column_block applies to shfl_bw, vector and unstructured, not {pattern!r}")
        search_imp = imp.view(m, -1, column_block).sum(dim=2)
    if pattern == "shfl_bw":
        mask, perm = shfl_bw_search(search_imp, vector, density, balanced, time_budget=time_budget, refine=refine,
                                    progress=progress)
    elif pattern == "unstructured":
        mask, perm = patterns.unstructured(search_imp, density), identity
    elif pattern == "vector":
        mask, perm = patterns.vector_wise(search_imp, vector, density, balanced), identity
    elif pattern == "block":
        mask, perm = patterns.block(imp, block_size, density), identity
    else:
        n, mm = (2, 4) if pattern == "n:m" else (int(nm[1]), int(nm[2]))
        if not 0 < n <= mm:
            raise ValueError(f"n:m needs 0 < n <= m, got {n}:{mm}")
        if abs(float(sparsity) - (1 - n / mm)) > 1e-6:  # the pattern fixes the sparsity: never return another
            raise ValueError(f"pattern {n}:{mm} prunes exactly {1 - n / mm:g} of the weights, but sparsity={sparsity!r} "
                             f"was asked: pass sparsity={1 - n / mm:g}")
        mask, perm = patterns.n_of_m(imp, n, mm), identity
    if column_block > 1:
        mask = mask.repeat_interleave(column_block, dim=1)
    total = float(imp.double().sum())
    kept = float((imp.double() * mask).sum()) / total if total > 0 else 1.0
    return PruneResult(mask.to(weight.device), perm.to(weight.device), kept, pattern, vector)
