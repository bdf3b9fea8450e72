"""LayerNorm(h + residual) written feature-major: the tail of every transformer sublayer.

In a BERT-style layer each sublayer ends ``LayerNorm(dense(x) + x)``. Per layer, ``shflbw.linear``
transposes dense's feature-major result back to token-major, PyTorch adds the residual and
LayerNorm reads it again: on a BERT-large sized encoder those transposes took 8.0 ms of a
35.1 ms forward and the adds and norms 6.3 ms (prototype/profile_e2e.py, H200; BENCHMARKS.md).
This kernel reads h and the residual in whatever layout they come (strides are free: a tile is
coalesced along whichever axis is contiguous) and writes the normalised result feature-major, so
the next sublayer's SpMM takes it with no transpose (``out.t()`` is the token-major view handed on).

One program owns a block of tokens. Up to 1024 features it reads its [F, BT] tile once and keeps it
in registers (79 us for 1024 x 32768 on the H200, against 131 us for PyTorch's add + layer_norm);
wider rows walk the features twice (shifted sums for the statistics, then the normalised store).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from shflbw.kernels.spmm import token_stats


@triton.jit
def _tile(h_ptr, r_ptr, offs_f, offs_t, ok, F, shf, sht, srf, srt, HAS_RES: tl.constexpr, r_mean, r_rs, rw_ptr, rb_ptr,
          NORM_RES: tl.constexpr):
    """h + residual over [offs_f, offs_t] in float32; NORM_RES: the residual is the un-normalised input
    of a deferred LayerNorm (per-token r_mean, r_rs; gain and shift at rw_ptr, rb_ptr), finished here."""
    x = tl.load(h_ptr + offs_f[:, None] * shf + offs_t[None, :] * sht, mask=ok, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(r_ptr + offs_f[:, None] * srf + offs_t[None, :] * srt, mask=ok, other=0.0).to(tl.float32)
        if NORM_RES:
            f_ok = offs_f < F
            rw = tl.load(rw_ptr + offs_f, mask=f_ok, other=0.0).to(tl.float32)
            rb = tl.load(rb_ptr + offs_f, mask=f_ok, other=0.0).to(tl.float32)
            r = (r - r_mean[None, :]) * r_rs[None, :] * rw[:, None] + rb[:, None]
        x += r
    return x


@triton.jit
def add_layernorm_fm_kernel(
    h_ptr,  # [F, T] at (shf, sht)
    r_ptr,  # [F, T] at (srf, srt), or dummy
    w_ptr,  # [F] LayerNorm weight
    b_ptr,  # [F] LayerNorm bias
    out_ptr,  # [F, T] contiguous (feature-major)
    F,
    T,
    shf,
    sht,
    srf,
    srt,
    eps,
    rstats_ptr,  # NORM_RES: [2, T] float32 sums of the residual's deferred LayerNorm, or dummy
    rw_ptr,  # NORM_RES: [F] that LayerNorm's weight, or dummy
    rb_ptr,  # NORM_RES: [F] its bias, or dummy
    r_eps,  # NORM_RES: its epsilon
    BF: tl.constexpr,
    BT: tl.constexpr,
    HAS_RES: tl.constexpr,
    ONE_PASS: tl.constexpr,  # BF covers all F: one read of the tile, kept in registers (small F)
    STAGES: tl.constexpr = 1,  # the walk's loads in flight (> 1: pipelined through shared memory)
    NORM_RES: tl.constexpr = False,  # the residual is the un-normalised input of a deferred LayerNorm
):
    offs_t = tl.program_id(0) * BT + tl.arange(0, BT)
    t_ok = offs_t < T
    if NORM_RES:
        r_mean, r_rs = token_stats(rstats_ptr, offs_t, t_ok, T, F, r_eps)
    else:
        r_mean = tl.zeros([BT], dtype=tl.float32)
        r_rs = r_mean
    offs_t = offs_t.to(tl.int64)
    if ONE_PASS:
        offs_f = tl.arange(0, BF)
        f_ok = offs_f < F
        ok = f_ok[:, None] & t_ok[None, :]
        x = _tile(h_ptr, r_ptr, offs_f, offs_t, ok, F, shf, sht, srf, srt, HAS_RES, r_mean, r_rs, rw_ptr, rb_ptr, NORM_RES)
        mean = tl.sum(x, axis=0) / F
        d = tl.where(ok, x - mean[None, :], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / F + eps)
        w = tl.load(w_ptr + offs_f, mask=f_ok, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs_f, mask=f_ok, other=0.0).to(tl.float32)
        y = d * rstd[None, :] * w[:, None] + b[:, None]
        tl.store(out_ptr + offs_f.to(tl.int64)[:, None] * T + offs_t[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)
        return
    # The walk: two passes over the features in [BF, BT] tiles, statistics first, then the
    # normalised store, which reads the tile again (at 1024 rows this lost to the one-pass tile:
    # BENCHMARKS.md, session 8; it serves wider rows, 4096: 99 us against 166 for three passes).
    # The first pass sums x - k and (x - k)^2 elementwise, k being each token's first feature, so
    # the variance keeps its precision when |mean| >> std (the shifted-data formula), and the sums
    # are reduced across the tile once, after the loop, not per step.
    k = _tile(h_ptr, r_ptr, tl.zeros([1], dtype=tl.int32), offs_t, t_ok[None, :], F, shf, sht, srf, srt, HAS_RES, r_mean,
              r_rs, rw_ptr, rb_ptr, NORM_RES)
    s1 = tl.zeros([BF, BT], dtype=tl.float32)
    s2 = tl.zeros([BF, BT], dtype=tl.float32)
    for f0 in tl.range(0, F, BF, num_stages=STAGES):
        offs_f = f0 + tl.arange(0, BF)
        ok = (offs_f < F)[:, None] & t_ok[None, :]
        x = _tile(h_ptr, r_ptr, offs_f, offs_t, ok, F, shf, sht, srf, srt, HAS_RES, r_mean, r_rs, rw_ptr, rb_ptr, NORM_RES)
        d = tl.where(ok, x - k, 0.0)
        s1 += d
        s2 += d * d
    shift_mean = tl.sum(s1, axis=0) / F
    var = tl.maximum(tl.sum(s2, axis=0) / F - shift_mean * shift_mean, 0.0)
    mean = tl.sum(k, axis=0) + shift_mean
    rstd = 1.0 / tl.sqrt(var + eps)
    for f0 in tl.range(0, F, BF, num_stages=STAGES):
        offs_f = f0 + tl.arange(0, BF)
        f_ok = offs_f < F
        ok = f_ok[:, None] & t_ok[None, :]
        x = _tile(h_ptr, r_ptr, offs_f, offs_t, ok, F, shf, sht, srf, srt, HAS_RES, r_mean, r_rs, rw_ptr, rb_ptr, NORM_RES)
        w = tl.load(w_ptr + offs_f, mask=f_ok, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs_f, mask=f_ok, other=0.0).to(tl.float32)
        y = (x - mean[None, :]) * rstd[None, :] * w[:, None] + b[:, None]
        tl.store(out_ptr + offs_f.to(tl.int64)[:, None] * T + offs_t[None, :], y.to(out_ptr.dtype.element_ty), mask=ok)


def add_layernorm_fm(h: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                     eps: float, config=None, residual_norm=None) -> torch.Tensor:
    """LayerNorm over the features of (h + residual), both [F, T] in any strides -> [F, T] contiguous.

    ``config`` (kernels.configs.AddNormConfig; default by F, ``addnorm_config``): ``one_pass`` reads
    each [F, block_t] tile once and keeps it in registers (block_f is then F rounded up to a power
    of two); otherwise the features are walked twice in [block_f, block_t] tiles.
    ``residual_norm`` = (stats [2, T] float32, weight [F], bias [F], eps): the residual is the
    un-normalised input of a deferred LayerNorm (ops/deferred_norm.py), normalised as it is read.
    """
    from shflbw.kernels.configs import addnorm_config

    f, t = h.shape
    out = torch.empty(f, t, dtype=h.dtype, device=h.device)
    if f == 0 or t == 0:
        return out
    cfg = config or addnorm_config(f, residual is not None, residual_norm is not None)
    r = residual if residual is not None else h
    if residual_norm is not None and residual is None:
        raise ValueError("residual_norm describes the residual: pass one")
    rstats, rw, rb, r_eps = residual_norm if residual_norm is not None else (out, weight, bias, 0.0)
    block_f = triton.next_power_of_2(f) if cfg.one_pass else cfg.block_f
    add_layernorm_fm_kernel[(triton.cdiv(t, cfg.block_t),)](
        h, r, weight, bias, out, f, t, h.stride(0), h.stride(1), r.stride(0), r.stride(1), eps, rstats, rw, rb, r_eps,
        BF=block_f, BT=cfg.block_t, HAS_RES=residual is not None, ONE_PASS=cfg.one_pass, STAGES=cfg.num_stages,
        NORM_RES=residual_norm is not None, num_warps=cfg.num_warps,
    )
    return out


def linear_add_layernorm(x, values, col_idx, group_ptr, perm, bias, residual, weight, ln_bias, eps: float,
                         out_features: int) -> torch.Tensor:
    """LayerNorm(x @ W^T + bias + residual) for token-major shaped x (..., K) and residual (..., M),
    returned as a (..., M) view of a feature-major buffer: the next SpMM reads it untransposed."""
    from shflbw.kernels.configs import DECODE_MAX_TOKENS
    from shflbw.kernels.linear import linear_fwd

    r = residual.reshape(-1, out_features).t()  # [M, T]
    t = r.shape[1]
    # A feature-major residual (the previous tail's output) is added in the SpMM's epilogue, so the
    # LayerNorm reads one [M, T] tensor instead of two.
    fused = t > DECODE_MAX_TOKENS and r.is_contiguous()
    h = linear_fwd(x, values, col_idx, group_ptr, perm, bias, out_features, feature_major_out=True,
                   residual=r if fused else None)
    out = add_layernorm_fm(h.reshape(-1, out_features).t(), None if fused else r, weight, ln_bias, eps)
    return out.t().reshape(*x.shape[:-1], out_features)


def linear_add_stats(x, values, col_idx, group_ptr, perm, bias, residual, out_features: int) -> torch.Tensor:
    """s = x @ W^T + bias + residual as a LayerNorm-pending tensor (ops/deferred_norm.py): the SpMM
    writes s feature-major and adds each token's sum and sum of squares into the statistics rows."""
    from shflbw.kernels.configs import DECODE_MAX_TOKENS
    from shflbw.kernels.linear import linear_fwd
    from shflbw.kernels.transpose import feature_major
    from shflbw.ops.deferred_norm import as_pending, fill_pending, pending_buffer

    t = residual.numel() // out_features if out_features else 0
    if t <= DECODE_MAX_TOKENS:
        return fill_pending(linear_fwd(x, values, col_idx, group_ptr, perm, bias, out_features) + residual)
    # A token-major residual (the first layer's: the embeddings) is transposed by the tiled copy
    # (43 us at 1024 x 32768 on an H100): the torch add, copy and sums it replaces took 620 us.
    r = feature_major(residual.reshape(-1, out_features))  # [M, T]
    buf, s, stats = pending_buffer(out_features, t, x.dtype, x.device)
    linear_fwd(x, values, col_idx, group_ptr, perm, bias, out_features, feature_major_out=True, residual=r, out_fm=s,
               stats_out=stats)
    return as_pending(buf, x.shape[:-1])
