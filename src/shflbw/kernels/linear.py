"""Token-major ``shflbw.linear`` on the GPU: pick the kernel by token count.

configs.linear_plan picks the path (H200 sweeps in BENCHMARKS.md); at T = 33-511 it picks by
whether the call is being captured into a CUDA graph (GPU time counts) or runs eagerly (host
launch cost counts: the fewest launches win):
- 'decode', T <= DECODE_MAX_TOKENS: the weight-bound split-K kernel (reads each packed value once;
  split-K finished in the same launch; T = 1 on CUDA cores; T > 1 with K >= 2048 reads X
  transposed). H200, 75 %, CUDA graphs: 2.1-2.35x of dense at T = 1 on layers >= 40M weights,
  1.25-1.78x at T = 16.
- 'roundtrip': transpose X to feature-major with a tiled Triton copy (3.0-3.7 TB/s on an H200,
  against 0.5-0.6 for torch's x.t().contiguous()), run the feature-major kernel with a
  feature-major output written through the permutation (whole rows move, so the scatter is
  coalesced), transpose the result back.
- 'splitk', where the roundtrip would launch few programs for long groups: transpose X, split each
  group's kept vectors over several programs adding float32 partials into a feature-major buffer,
  transpose back adding the bias and casting. Not bitwise repeatable (atomics), so not chosen
  under torch.use_deterministic_algorithms.
- 'transpose', eager calls at T = 33-511 only (under capture the roundtrip beat it in every case
  from T = 64, graph-replay sweep of commit a0f72c5): transpose X, then run the feature-major
  kernel storing its tile transposed into the token-major output through the permutation, bias
  fused. Gathering single 2-byte features from token-major X instead ran at 0.1-0.3x of dense
  (CONTEXT.md).

Measured (BENCHMARKS.md, 4096 x 4096, T = 4096, 75 %): the permuted token-major store costs more
than the kernel itself (group order: 1.57x of dense; through the permutation: 0.69x); writing
group order then gathering columns back was no better (0.77x); the roundtrip reached 1.36x.
Beyond that, fold the permutation into the consumer: the MLP region (shflbw.nn.mlp, kernels/mlp.py)
keeps the hidden activation feature-major (BERT-large's block at T = 32768: 1.50x against 1.03x as
two per-layer calls). An x that is already a transposed view of a feature-major buffer is used in
place (no input transpose).
"""

from __future__ import annotations

import torch

from shflbw.kernels.configs import decode_config as pick_decode_config
from shflbw.kernels.configs import DECODE_MAX_TOKENS, decode_plan, linear_plan, packed_spmm_config, sm_count
from shflbw.kernels.decode import DecodeConfig, linear_decode  # noqa: F401  (DecodeConfig: type of decode_config)
from shflbw.kernels.decode_streamk import linear_decode_streamk
from shflbw.kernels.spmm import SpmmConfig, launch_spmm
from shflbw.kernels.transpose import feature_major, transpose


def linear_fwd(
    x: torch.Tensor,
    values: torch.Tensor,
    col_idx: torch.Tensor,
    group_ptr: torch.Tensor,
    perm: torch.Tensor,
    bias: torch.Tensor | None,
    out_features: int,
    *,
    path: str | None = None,
    config: SpmmConfig | None = None,
    decode_config: DecodeConfig | None = None,
    splits: int | None = None,
    row_slice: int | None = None,
    reduce: str = "fixup",
    feature_major_out: bool = False,
    residual: torch.Tensor | None = None,
    out_fm: torch.Tensor | None = None,
    stats_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x @ W^T (+ bias) (+ residual); ``path`` ('decode' | 'splitk' | 'roundtrip' | 'transpose'), ``config``
    (SpmmConfig), ``decode_config``, ``splits``, ``row_slice`` and ``reduce`` fix the choice (tests,
    benchmarks). ``feature_major_out``: beyond the decode path, the roundtrip without its transpose
    back, y returned as a view of the feature-major buffer (for a consumer that reads it there,
    kernels/addnorm.py); the decode path's y stays token-major. ``residual``: an [out_features, T]
    contiguous (feature-major) tensor added in the SpMM's epilogue, on the roundtrip path with
    ``feature_major_out`` only (more than DECODE_MAX_TOKENS tokens). There too, ``out_fm`` (an
    [out_features, T] buffer, rows contiguous) receives y, and ``stats_out`` (launch_spmm) its
    per-token sums."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    t = x2.shape[0]
    if t == 0 or out_features == 0:
        return x.new_zeros(*x.shape[:-1], out_features)
    if path is None:
        # decode (T <= DECODE_MAX_TOKENS) does not depend on capture: skip the query there
        capturing = t > DECODE_MAX_TOKENS and x.is_cuda and torch.cuda.is_current_stream_capturing()
        path, plan_splits = linear_plan(t, group_ptr.numel() - 1, values.shape[0], sm_count(x.device), capturing)
        if feature_major_out and path != "decode":
            path = "roundtrip"
        elif path == "splitk":
            splits = splits or plan_splits
    if (residual is not None or out_fm is not None or stats_out is not None) and (
            path != "roundtrip" or not feature_major_out):
        raise ValueError("residual, out_fm and stats_out need the roundtrip path with feature_major_out "
                         f"(more than {DECODE_MAX_TOKENS} tokens), not {path!r}")
    if path == "decode":
        dcfg = decode_config or pick_decode_config(t, k)
        if t > 1 and dcfg.transpose_x:
            # Feature-major X: each gathered feature is one contiguous run of T tokens, not T
            # scattered 2-byte reads.
            x2 = feature_major(x2).t()
        elif x2.stride(-1) != 1:
            x2 = x2.contiguous()
        sms = sm_count(x.device)
        if dcfg.stream_k:
            # ``splits`` here is the number of programs (tests); else stream_k per SM (2 SMs' worth
            # under the interpreter).
            if row_slice or reduce != "fixup":
                raise ValueError("the stream-K decode kernel (decode_config.stream_k) has no row_slice or reduce choice")
            programs = splits or dcfg.stream_k * (sms or 2)
            out = linear_decode_streamk(x2, values, col_idx, group_ptr, perm, bias, out_features, programs, dcfg)
        else:
            plan_slice, plan_splits = decode_plan(
                group_ptr.numel() - 1, values.shape[1], values.shape[0], t, sms, dcfg
            )
            out = linear_decode(
                x2, values, col_idx, group_ptr, perm, bias, out_features, splits or plan_splits,
                config=dcfg, row_slice=row_slice or plan_slice, reduce=reduce,
            )
    elif path == "splitk":
        # Few programs per group at small T would leave most SMs idle (4096 x 4096, V = 128,
        # T = 128: 32 programs), so each group's kept vectors are split over several programs
        # that add float32 partial sums into a feature-major buffer; the transpose back adds the
        # bias and casts.
        xt = feature_major(x2)
        cfg = config or packed_spmm_config(values, group_ptr, t)
        acc = torch.zeros(out_features, t, dtype=torch.float32, device=x.device)
        launch_spmm(values, col_idx, group_ptr, perm, xt, None, acc, (t, 1), cfg, splits=splits or 4)
        out = transpose(acc, dtype=x.dtype, bias=bias)
    elif path in ("roundtrip", "transpose"):
        xt = feature_major(x2)  # [K, T]
        cfg = config or packed_spmm_config(values, group_ptr, t)
        if path == "roundtrip":
            # Feature-major output: the permutation moves whole contiguous rows (cheap), then one
            # more tiled transpose back to token-major.
            if out_fm is None:
                out_fm = torch.empty(out_features, t, dtype=x.dtype, device=x.device)
            launch_spmm(values, col_idx, group_ptr, perm, xt, bias, out_fm, (t, 1), cfg, residual=residual,
                        stats_out=stats_out)
            out = out_fm.t() if feature_major_out else transpose(out_fm)
        else:
            out = torch.empty(t, out_features, dtype=x.dtype, device=x.device)
            launch_spmm(values, col_idx, group_ptr, perm, xt, bias, out, (1, out_features), cfg)
    else:
        raise ValueError(f"path must be 'decode', 'splitk', 'roundtrip' or 'transpose', got {path!r}")
    return out.reshape(*x.shape[:-1], out_features)
