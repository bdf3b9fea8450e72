"""The packed weight back to a dense M x K matrix on the device, for shapes where cuBLAS on it wins.

Sync-free (no host reads of group sizes), so it is capturable in a CUDA graph: each kept vector
finds its group by a binary search of group_ptr. Cost: one zeroed G x K x V buffer, two scatters and
one transposing copy, about three passes over M x K elements.
"""

from __future__ import annotations

import torch


def densify(values: torch.Tensor, col_idx: torch.Tensor, group_ptr: torch.Tensor, perm: torch.Tensor,
            out_features: int, in_features: int) -> torch.Tensor:
    """W (out_features x in_features, original row order, zeros where pruned) from the packed tensors."""
    nnz, v = values.shape
    n_groups = group_ptr.numel() - 1
    entry = torch.arange(nnz, device=values.device, dtype=group_ptr.dtype)
    # group of entry i: how many group ends are <= i (empty groups repeat an end and are skipped)
    gid = torch.searchsorted(group_ptr[1:].contiguous(), entry, right=True)
    panels = torch.zeros(n_groups, in_features, v, dtype=values.dtype, device=values.device)
    panels[gid.long(), col_idx.long()] = values
    grouped = panels.permute(0, 2, 1).reshape(n_groups * v, in_features)
    out = torch.empty(out_features, in_features, dtype=values.dtype, device=values.device)
    out[perm.long()] = grouped[:out_features]
    return out
