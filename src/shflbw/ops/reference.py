"""Pure-PyTorch reference implementations: the CPU kernels of the registered ops and the oracle of every test.

They work on the raw packed tensors (see ``shflbw.format.matrix`` for the layout), gather the
kept columns of each row group, multiply in float32 and cast the result back to the input dtype.
One Python loop over row groups: clear rather than fast.
"""

from __future__ import annotations

import torch


def _groups(group_ptr: torch.Tensor):
    ptr = [int(v) for v in group_ptr.tolist()]
    for g in range(len(ptr) - 1):
        if ptr[g + 1] > ptr[g]:
            yield g, ptr[g], ptr[g + 1]


def linear_fwd_ref(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
) -> torch.Tensor:
    """y = x @ W^T (+ bias) for token-major x (..., K); y is (..., M) in the original row order."""
    v = values.shape[1]
    k = x.shape[-1]
    x2 = x.reshape(-1, k).float()
    vals = values.float()
    cols = col_idx.long()
    n_groups = group_ptr.numel() - 1
    out_p = torch.zeros(x2.shape[0], n_groups * v, dtype=torch.float32, device=x.device)  # group order, padded
    for g, s, e in _groups(group_ptr):
        out_p[:, g * v : (g + 1) * v] = x2[:, cols[s:e]] @ vals[s:e]
    out = torch.empty(x2.shape[0], out_features, dtype=torch.float32, device=x.device)
    out[:, perm.long()] = out_p[:, :out_features]
    if bias is not None:
        out += bias.float()
    return out.to(x.dtype).reshape(*x.shape[:-1], out_features)


def linear_bwd_ref(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    out_features: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``linear_fwd_ref`` for x and for the kept values (float32 accumulation)."""
    v = values.shape[1]
    k = x.shape[-1]
    x2 = x.reshape(-1, k).float()
    go = grad_out.reshape(-1, out_features).float()
    n_groups = group_ptr.numel() - 1
    go_p = torch.zeros(go.shape[0], n_groups * v, dtype=torch.float32, device=x.device)
    go_p[:, :out_features] = go[:, perm.long()]
    vals = values.float()
    cols = col_idx.long()
    grad_x = torch.zeros_like(x2)
    grad_v = torch.zeros_like(vals)
    for g, s, e in _groups(group_ptr):
        go_g = go_p[:, g * v : (g + 1) * v]  # [T, V]
        grad_x.index_add_(1, cols[s:e], go_g @ vals[s:e].t())
        grad_v[s:e] = x2[:, cols[s:e]].t() @ go_g
    return grad_x.to(x.dtype).reshape(x.shape), grad_v.to(values.dtype)


def spmm_ref(
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    b: torch.Tensor,
    out_rows: int,
) -> torch.Tensor:
    """C = W @ B for feature-major B (K x N); C is M x N in the original row order."""
    return linear_fwd_ref(b.t(), values, col_idx, group_ptr, perm, None, out_rows).t().contiguous()


def conv2d_ref(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_channels: int,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """F.conv2d (groups = 1) on a packed Cout x Cin*R*S weight: unfold, then gather each group's kept rows."""
    import torch.nn.functional as F

    n = x.shape[0]
    _, r, s = kernel
    ho, wo = conv_out_size(x.shape[2], x.shape[3], kernel, stride, padding, dilation)
    cols = F.unfold(x, (r, s), dilation=dilation, padding=padding, stride=stride)  # [N, Cin*R*S, L]
    y = linear_fwd_ref(cols.transpose(1, 2), values, col_idx, group_ptr, perm, bias, out_channels)  # [N, L, Cout]
    out = y.transpose(1, 2).reshape(n, out_channels, ho, wo)
    return out.contiguous(memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)


def conv_out_size(h: int, w: int, kernel, stride, padding, dilation) -> tuple[int, int]:
    """Output height and width of a convolution (kernel = (Cin, R, S)), as F.conv2d computes them."""
    ho = (h + 2 * padding[0] - dilation[0] * (kernel[1] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kernel[2] - 1) - 1) // stride[1] + 1
    return ho, wo


def is_channels_last(x: torch.Tensor) -> bool:
    """channels_last and not also plain contiguous (as with C = 1 or H = W = 1)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def feature_major_view(y: torch.Tensor) -> torch.Tensor:
    """(..., M) token-major values as a (..., M) view of a feature-major [M, T] buffer (one copy):
    the layout the feature-major-out kernels return, so every path of an op gives the same strides."""
    m = y.shape[-1]
    return y.reshape(-1, m).t().contiguous().t().reshape(y.shape)
