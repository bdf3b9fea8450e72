"""Masks for the comparison patterns: unstructured, vector (V x 1, no shuffle), block (b x b), n:m."""

from __future__ import annotations

import math

import torch


def topk_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of the ``keep`` largest entries of ``scores`` (ties broken by position)."""
    flat = scores.flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(scores)


def unstructured(importance: torch.Tensor, density: float) -> torch.Tensor:
    return topk_mask(importance, round(density * importance.numel()))


def grouped_rows(importance: torch.Tensor, vector: int, density: float, balanced: bool) -> torch.Tensor:
    """Per-group column choice for rows already in group order: [G, K] boolean of kept vectors.

    Global budget: the top round(density * G * K) (group, column) scores over all groups;
    balanced: the top round(density * K) columns inside every group.
    """
    m, k = importance.shape
    g_count = math.ceil(m / vector)
    padded = torch.zeros(g_count * vector, k, dtype=importance.dtype, device=importance.device)
    padded[:m] = importance
    scores = padded.view(g_count, vector, k).sum(dim=1)  # [G, K]
    if balanced:
        keep = round(density * k)
        out = torch.zeros_like(scores, dtype=torch.bool)
        if keep:
            out.scatter_(1, torch.topk(scores, keep, dim=1).indices, True)
        return out
    return topk_mask(scores, round(density * g_count * k))


def vector_wise(importance: torch.Tensor, vector: int, density: float, balanced: bool) -> torch.Tensor:
    keep = grouped_rows(importance, vector, density, balanced)
    return keep.repeat_interleave(vector, dim=0)[: importance.shape[0]]


def block(importance: torch.Tensor, block_size: int, density: float) -> torch.Tensor:
    m, k = importance.shape
    gm, gk = math.ceil(m / block_size), math.ceil(k / block_size)
    padded = torch.zeros(gm * block_size, gk * block_size, dtype=importance.dtype, device=importance.device)
    padded[:m, :k] = importance
    scores = padded.view(gm, block_size, gk, block_size).sum(dim=(1, 3))
    keep = topk_mask(scores, round(density * gm * gk))
    return keep.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)[:m, :k]


def n_of_m(importance: torch.Tensor, n: int, m_: int) -> torch.Tensor:
    """Keep the n largest of every m consecutive inputs of a row (2:4 is n=2, m=4)."""
    rows, k = importance.shape
    if k % m_:
        raise ValueError(f"pattern {n}:{m_} needs in_features divisible by {m_}, got {k}")
    chunks = importance.reshape(rows, k // m_, m_)
    mask = torch.zeros_like(chunks, dtype=torch.bool)
    mask.scatter_(2, torch.topk(chunks, n, dim=2).indices, True)
    return mask.view(rows, k)
