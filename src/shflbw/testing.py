"""Random Shfl-BW problems for tests and benchmarks (never zeros: see CONTRIBUTING.md)."""

from __future__ import annotations

import math

import torch


def random_shflbw_mask(
    m: int,
    k: int,
    vector: int,
    density: float,
    *,
    generator: torch.Generator | None = None,
    empty_groups: tuple[int, ...] = (),
    dense_groups: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random row permutation and a mask (M x K, original row order) that is Shfl-BW under it.

    Each row group keeps round(density * K) random columns; groups listed in ``empty_groups``
    keep none and those in ``dense_groups`` keep all.
    """
    n_groups = math.ceil(m / vector)
    perm = torch.randperm(m, generator=generator)
    keep = round(density * k)
    group_cols = torch.zeros(n_groups, k, dtype=torch.bool)
    for g in range(n_groups):
        cols = torch.randperm(k, generator=generator)[:keep]
        group_cols[g, cols] = True
    for g in empty_groups:
        group_cols[g] = False
    for g in dense_groups:
        group_cols[g] = True
    rows = group_cols.repeat_interleave(vector, dim=0)[:m]  # permuted order
    mask = torch.empty_like(rows)
    mask[perm] = rows
    return mask, perm


def random_problem(
    m: int,
    k: int,
    vector: int,
    density: float,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **mask_kwargs,
):
    """(weight, mask, perm, packed ShflBWMatrix) with standard-normal weights."""
    from shflbw.format.matrix import ShflBWMatrix

    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(m, k, generator=gen).to(dtype)
    mask, perm = random_shflbw_mask(m, k, vector, density, generator=gen, **mask_kwargs)
    weight, mask, perm = weight.to(device), mask.to(device), perm.to(device)
    return weight, mask, perm, ShflBWMatrix.from_dense(weight, mask, perm, vector=vector)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere in out gives inf (never passes a tolerance)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not bool(torch.isfinite(out64).all()):
        return math.inf
    denom = ref64.norm().item()
    num = (out64 - ref64).norm().item()
    return num / denom if denom > 0 else num
