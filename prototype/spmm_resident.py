"""Feature-major Shfl-BW SpMM with each group's values resident: one program, one group, many token tiles.

Why: at V = 64 the one-tile kernel (kernels/spmm.py) is bound by L2 traffic (Nsight Compute,
BENCHMARKS.md session 3: 71 % of the L2's peak). Besides the gathered rows of B, every [V, BN]
tile re-reads its group's whole value panel from L2: for BERT-large's Q/K/V projection (3072 x
1024, 75 %, 32768 tokens, BN 128) that is 403 MB of values beside 805 MB of gathered rows. When a
group keeps few vectors (short reductions: K = 1024 at 75 % keeps about 256, a [256, 64] panel of
32 KB), a program can load the panel once and keep it on chip while it walks many token tiles of
that group, so only the gathered rows cross L2.

Programs are laid out (group, slot): slot s of group g computes token tiles s, s + P, s + 2P, ...
(P slots per group), groups varying fastest so the programs running together gather from the
same few token tiles of B. The panel covers the largest group's kept vectors in one or two power-of-two parts
(resident_panel: 256 + 64 for 300), with masked loads: a group that keeps fewer vectors multiplies
zeros there but does not read them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from shflbw.kernels.spmm import _store_tile, dot_precision, interpreter_upcast, kernel_activation, needs_int64


@triton.jit
def spmm_resident_kernel(
    vals_ptr,  # [nnz, V]
    cols_ptr,  # [nnz] int32
    gptr_ptr,  # [G + 1] int32
    perm_ptr,  # [M] int32
    b_ptr,  # [K, N], any strides
    bias_ptr,  # [M] or dummy
    res_ptr,  # [M, N] at the output's strides, or dummy
    out_ptr,  # [M, N] at (stride_om, stride_on)
    M,
    N,
    stride_bk,
    stride_bn,
    stride_om,
    stride_on,
    V: tl.constexpr,
    BN: tl.constexpr,
    KA: tl.constexpr,  # panel rows: KA + KB >= every group's kept vectors (powers of two; KB may be 0)
    KB: tl.constexpr,
    STAGES: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    PERMUTE_OUT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    IDX64: tl.constexpr,
):
    g = tl.program_id(0)
    slot = tl.program_id(1)
    slots = tl.num_programs(1)
    start = tl.load(gptr_ptr + g)
    end = tl.load(gptr_ptr + g + 1)
    at, cols, k_ok = _panel(vals_ptr, cols_ptr, start, end, 0, V, KA, IDX64, UPCAST)
    if KB > 0:
        at2, cols2, k_ok2 = _panel(vals_ptr, cols_ptr, start, end, KA, V, KB, IDX64, UPCAST)
    for tile in tl.range(slot, tl.cdiv(N, BN), slots, num_stages=STAGES):
        offs_n = tile * BN + tl.arange(0, BN)
        n_ok = offs_n < N
        acc = tl.dot(at, _rows(b_ptr, cols, k_ok, offs_n, n_ok, stride_bk, stride_bn, IDX64, UPCAST),
                     input_precision=DOT_PRECISION)  # [V, BN]
        if KB > 0:
            acc = tl.dot(at2, _rows(b_ptr, cols2, k_ok2, offs_n, n_ok, stride_bk, stride_bn, IDX64, UPCAST), acc,
                         input_precision=DOT_PRECISION)
        _store_tile(acc, g, tl.arange(0, V), offs_n, n_ok, M, N, perm_ptr, bias_ptr, res_ptr, out_ptr, stride_om,
                    stride_on, out_ptr, out_ptr, 1, 0.0, V, HAS_BIAS, HAS_RESIDUAL, ACTIVATION, PERMUTE_OUT)


@triton.jit
def _panel(vals_ptr, cols_ptr, start, end, first, V: tl.constexpr, KP: tl.constexpr, IDX64: tl.constexpr,
           UPCAST: tl.constexpr):
    """Kept vectors first .. first + KP of the group [start, end): the transposed value panel
    [V, KP] (zeros past the group's end), their column indices, and which exist."""
    kk = start + first + tl.arange(0, KP)
    k_ok = kk < end
    cols = tl.load(cols_ptr + kk, mask=k_ok, other=0)
    if IDX64:
        cols = cols.to(tl.int64)
        kk = kk.to(tl.int64)
    a = tl.load(vals_ptr + kk[:, None] * V + tl.arange(0, V)[None, :], mask=k_ok[:, None], other=0.0)  # [KP, V]
    if UPCAST:
        a = a.to(tl.float32)
    return tl.trans(a), cols, k_ok


@triton.jit
def _rows(b_ptr, cols, k_ok, offs_n, n_ok, stride_bk, stride_bn, IDX64: tl.constexpr, UPCAST: tl.constexpr):
    """The gathered rows of B for a panel: [KP, BN], zeros for the rows past the group's end."""
    if IDX64:
        offs_n = offs_n.to(tl.int64)
    b = tl.load(b_ptr + cols[:, None] * stride_bk + offs_n[None, :] * stride_bn, mask=k_ok[:, None] & n_ok[None, :],
                other=0.0)
    if UPCAST:
        b = b.to(tl.float32)
    return b


def resident_panel(group_ptr: torch.Tensor) -> tuple[int, int]:
    """(KA, KB): powers of two (KB may be 0, both at least 16 when used) whose sum covers the
    largest group's kept vectors with the least padding (a device sync: call once per packed
    weight and keep the result). 256 kept -> (256, 0); 300 -> (256, 64)."""
    counts = group_ptr[1:] - group_ptr[:-1]
    most = max(1, int(counts.max().item())) if counts.numel() else 1
    ka = max(16, triton.next_power_of_2(most))
    if ka // 2 >= 16 and ka // 2 < most:
        rest = most - ka // 2
        kb = max(16, triton.next_power_of_2(rest))
        if ka // 2 + kb < ka:
            return ka // 2, kb
    return ka, 0


def launch_resident(values: torch.Tensor, col_idx: torch.Tensor, group_ptr: torch.Tensor, perm: torch.Tensor,
                    b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, out_strides: tuple[int, int],
                    panel: tuple[int, int], block_n: int = 64, num_warps: int = 4, num_stages: int = 2, slots: int | None = None,
                    permute_out: bool = True, activation: int = 0, residual: torch.Tensor | None = None,
                    programs_per_sm: int = 2) -> torch.Tensor:
    """``launch_spmm``'s contract (same arguments and output) on the resident-panel kernel.

    ``panel``: resident_panel(group_ptr) (or one covering more). ``slots``: programs per group (default: about
    ``programs_per_sm`` programs per SM over all groups, at most one per token tile).
    """
    activation = kernel_activation(activation, out.dtype)
    n_groups = group_ptr.numel() - 1
    m = perm.numel() if permute_out else n_groups * values.shape[1]
    n = b.shape[1]
    tiles = triton.cdiv(n, block_n)
    if slots is None:
        sms = torch.cuda.get_device_properties(b.device).multi_processor_count if b.is_cuda else 4
        slots = max(1, min(tiles, round(programs_per_sm * sms / max(1, n_groups))))
    spmm_resident_kernel[(n_groups, slots)](
        values, col_idx, group_ptr, perm, b,
        bias if bias is not None else values,
        residual if residual is not None else values,
        out, m, n, b.stride(0), b.stride(1), out_strides[0], out_strides[1],
        V=values.shape[1], BN=block_n, KA=panel[0], KB=panel[1], STAGES=num_stages,
        HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, ACTIVATION=activation,
        PERMUTE_OUT=permute_out, DOT_PRECISION=dot_precision(values.dtype), UPCAST=interpreter_upcast(values.dtype),
        IDX64=needs_int64(values, b, out), num_warps=num_warps,
    )
    return out
