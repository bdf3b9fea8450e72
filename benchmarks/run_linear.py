"""Benchmark token-major shflbw.linear against dense F.linear (cuBLAS), torch 2:4 and torch BSR on one GPU.

    python benchmarks/run_linear.py --suite quick --out results.json [--sweep] [--chain 8] [--dense-compiled]

Every row is gated: a variant whose output is wrong against the fp32 dense product on the masked
weight reports no time. T <= 16 rows are timed as CUDA-graph replays on both sides; ``--chain N``
adds both sides per layer inside one graph of N layers with their own weight copies (timing.chain_us).
The other libraries' rows (benchmarks/baselines.py): torch 2:4 at 50 % (T >= 32), torch BSR with
--bsr-block tiles at every sparsity, and with --dense-compiled dense F.linear under torch.compile
(max-autotune; it compiles every shape, which is why it is not on by default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.baselines import bsr_candidates, dense_compiled_candidates, semi_structured_candidates  # noqa: E402
from benchmarks.cases import LinearCase, suite  # noqa: E402
from benchmarks.roofline import Ceilings, ceiling_pct  # noqa: E402
from benchmarks.timing import format_row, gated, gated_chain, median_us  # noqa: E402
from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.kernels.configs import DECODE_MAX_TOKENS  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.configs import spmm_config  # noqa: E402
from shflbw.kernels.decode import DecodeConfig  # noqa: E402
from shflbw.kernels.spmm import SpmmConfig, launch_spmm, spmm_fwd  # noqa: E402
from shflbw.kernels.transpose import transpose  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402

# The best of the first sweeps (BENCHMARKS.md), plus deeper pipelines and wider K steps.
SWEEP_CONFIGS = [
    SpmmConfig(64, 64, 4, 3),
    SpmmConfig(128, 64, 4, 3),
    SpmmConfig(128, 64, 4, 4),
    SpmmConfig(128, 64, 4, 5),
    SpmmConfig(128, 128, 8, 2),
    SpmmConfig(128, 128, 8, 3),
    SpmmConfig(128, 128, 4, 3),
    SpmmConfig(256, 64, 8, 4),
]
# (row_slice, k_splits, block_k, warps)
DECODE_SWEEP = [(16, 1, 64, 4), (16, 1, 128, 4), (32, 1, 128, 4), (16, 2, 128, 4), (64, 4, 128, 4), (64, 8, 128, 4)]


def stamp() -> dict:
    import triton

    commit = os.environ.get("SHFLBW_COMMIT")  # the device copy of the repo carries no git history
    if not commit:
        try:
            commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
        except Exception:
            commit = "unknown"
    return {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "commit": commit,
    }


DEVICE = "cuda"  # the CPU test of run_case sets "cpu" (kernels under TRITON_INTERPRET=1, times faked)
_packed_cache: dict = {}


def problem(case: LinearCase):
    key = (case.out_features, case.in_features, case.sparsity, case.vector, case.dtype)
    if key not in _packed_cache:
        _packed_cache.clear()
        dtype = getattr(torch, case.dtype)
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(case.out_features, case.in_features, generator=gen).to(dtype).to(DEVICE)
        mask, perm = random_shflbw_mask(case.out_features, case.in_features, case.vector, 1 - case.sparsity, generator=gen)
        mask, perm = mask.to(DEVICE), perm.to(DEVICE)
        w = ShflBWMatrix.from_dense(weight, mask, perm, vector=case.vector)
        _packed_cache[key] = (weight, (weight * mask), w)
    return _packed_cache[key]


def run_case(case: LinearCase, sweep: bool, chain: int = 0, bsr_block: int = 64, dense_compiled: bool = False,
             ceilings: Ceilings | None = None) -> list[dict]:
    dtype = getattr(torch, case.dtype)
    weight, masked, w = problem(case)
    x = torch.randn(case.tokens, case.in_features, device=DEVICE).to(dtype)
    ref = F.linear(x.float(), masked.float())
    graph = case.tokens <= 16
    m = case.out_features
    rows = [gated("dense", lambda: F.linear(x, weight), F.linear(x.float(), weight.float()), dtype, graph)]
    if dense_compiled:
        rows.extend(other_library("dense-compiled", lambda: dense_compiled_candidates(x, weight), dtype, graph))
    args = (w.values, w.col_idx, w.group_ptr, w.perm, None, m)
    rows.append(gated("shflbw", lambda: linear_fwd(x, *args), ref, dtype, graph))
    if not graph:
        # Eager times here include Python launch overhead (several Triton launches per call, 36-53
        # us each on the H200 machine's CPU: at T = 4096 the roundtrip's ~150 us of host time can
        # exceed its GPU time); the CUDA-graph replays show the GPU time alone. Speedups of '-graph'
        # rows are against dense-graph.
        rows.append(gated("dense-graph", lambda: F.linear(x, weight), F.linear(x.float(), weight.float()), dtype, True))
        rows.append(gated("shflbw-graph", lambda: linear_fwd(x, *args), ref, dtype, True))
    if graph and chain > 1:
        rows.extend(chained(x, weight, w, ref, dtype, chain))
    if case.tokens <= DECODE_MAX_TOKENS:
        for vs, splits, bk, nw in DECODE_SWEEP if sweep else ():
            dcfg = DecodeConfig(bk, nw)
            name = f"decode-r{vs}s{splits}k{bk}w{nw}"
            rows.append(gated(name, lambda: linear_fwd(x, *args, path="decode", splits=splits, row_slice=vs, decode_config=dcfg),
                              ref, dtype, graph))
    else:
        rows.append(gated("transpose-scatter", lambda: linear_fwd(x, *args, path="transpose"), ref, dtype))
        for cfg in SWEEP_CONFIGS if sweep else ():
            name = f"rt-n{cfg.block_n}k{cfg.block_k}w{cfg.num_warps}s{cfg.num_stages}"
            rows.append(gated(name, lambda: linear_fwd(x, *args, path="roundtrip", config=cfg), ref, dtype, graph))
        # The paper's feature-major layout, transpose not counted (the input is already K x T).
        xt = x.t().contiguous()
        rows.append(gated("spmm-feature-major", lambda: spmm_fwd(w.values, w.col_idx, w.group_ptr, w.perm, xt, m), ref.t(), dtype))
        if case.tokens <= 512:  # the weight-bound kernel with a larger token tile
            rows.append(gated("decode-path", lambda: linear_fwd(x, *args, path="decode", decode_config=DecodeConfig(64, 8)), ref, dtype))
        # What folding the permutation into the consumer would give: transpose + kernel, group-order output.
        padded = w.num_groups * w.vector
        ref_g = torch.zeros(case.tokens, padded, device=DEVICE)
        ref_g[:, :m] = ref[:, w.perm.long()]
        cfg0 = spmm_config(w.vector, case.tokens, dtype)

        def group_order():
            out_g = torch.empty(case.tokens, padded, dtype=dtype, device=DEVICE)
            return launch_spmm(w.values, w.col_idx, w.group_ptr, w.perm, transpose(x), None, out_g, (1, padded), cfg0, permute_out=False)

        rows.append(gated("group-order-out", group_order, ref_g, dtype))
    if case.sparsity == 0.5 and case.tokens >= 32:
        rows.extend(other_library("torch-2:4", lambda: semi_structured_candidates(x, weight), dtype, graph))
    if graph:
        # Decode rows are graph replays on both sides; whether torch's BSR path captures is not
        # known, and a capture that fails part-way could spoil every row after it in this process.
        rows.append({"variant": f"torch-bsr{bsr_block}", "us": None,
                     "status": "not timed: T <= 16 rows are CUDA-graph replays (BSR capture untried)"})
    else:
        rows.extend(other_library(f"torch-bsr{bsr_block}", lambda: bsr_candidates(x, weight, case.sparsity, bsr_block),
                                  dtype, graph))
    dense_us = rows[0]["us"]
    dense_graph_us = next((r["us"] for r in rows if r["variant"] == "dense-graph"), None)
    dense_chain_us = next((r["us"] for r in rows if r["variant"].startswith("dense-chain")), None)
    for r in rows:
        base = dense_graph_us if r["variant"].endswith("-graph") else dense_us
        if "-chain" in r["variant"]:
            base = dense_chain_us
        r.update(case=case.name, speedup=(base / r["us"]) if r["us"] and base else None)
        r["tflops"] = (2 * case.tokens * m * case.in_features / r["us"] / 1e6) if r["us"] else None
        r["ceiling_pct"] = ceiling_pct(r["variant"], r["us"], case.tokens, m, case.in_features, case.sparsity,
                                       dtype.itemsize, ceilings)
    return rows


def chained(x, weight, w, ref, dtype, n: int) -> list[dict]:
    """Dense and shflbw per layer inside one CUDA graph of n layers, each with its own copy of the
    weights (as a decode server replays a whole model step; timing.chain_us)."""
    m = weight.shape[0]
    dense_ref = F.linear(x.float(), weight.float())
    weights = [weight.clone() for _ in range(n)]
    packs = [(w.values.clone(), w.col_idx.clone(), w.group_ptr.clone(), w.perm.clone()) for _ in range(n)]
    dense_fns = [lambda wi=wi: F.linear(x, wi) for wi in weights]
    sparse_fns = [lambda p=p: linear_fwd(x, *p, None, m) for p in packs]
    return [gated_chain(f"dense-chain{n}", dense_fns, dense_ref, dtype),
            gated_chain(f"shflbw-chain{n}", sparse_fns, ref, dtype)]


def other_library(name: str, build, dtype, graph: bool) -> list[dict]:
    """Gate and time another library's candidates (benchmarks/baselines.py) as the shflbw rows are
    timed (graph replays where ``graph``). A build or call this torch, card or shape cannot run is
    an 'unavailable' row: not every shape and build runs 2:4 or BSR, nor captures them in a graph."""
    try:
        candidates = build()
    except Exception as e:
        return [{"variant": name, "us": None, "status": f"unavailable: {type(e).__name__}: {str(e)[:80]}"}]
    rows = []
    for variant, fn, ref in candidates:
        try:
            rows.append(gated(variant, fn, ref, dtype, graph))
        except Exception as e:
            rows.append({"variant": variant, "us": None, "status": f"unavailable: {type(e).__name__}: {str(e)[:80]}"})
    return rows


def measure_ceilings() -> tuple[Ceilings, list[dict]]:
    """This card's copy and matmul rates (benchmarks/roofline.py), and their rows."""
    a = torch.randn(2**28 // 2, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    copy_us = median_us(lambda: b.copy_(a))
    p = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_us = median_us(lambda: p @ p)
    ceil = Ceilings(bytes_per_us=2 * 2**28 / copy_us, flops_per_us=2 * 8192**3 / mm_us)
    return ceil, [{"variant": "copy 512MB", "us": copy_us, "TB/s": ceil.bytes_per_us / 1e6},
                  {"variant": "dense 8192^3", "us": mm_us, "TFLOP/s": ceil.flops_per_us / 1e6}]


def micro() -> list[dict]:
    """The transpose on its own, beside torch's."""
    from shflbw.kernels.transpose import transpose

    out = []
    for t, k in [(4096, 4096), (8192, 4096), (4096, 11008), (512, 4096)]:
        x = torch.randn(t, k, device="cuda", dtype=torch.bfloat16)
        assert torch.equal(transpose(x), x.t().contiguous())
        for br, bc, nw in [(64, 64, 4), (128, 64, 4), (64, 128, 4), (128, 128, 8)]:
            us = median_us(lambda: transpose(x, br, bc, nw))
            out.append({"variant": f"transpose {t}x{k} b{br}x{bc}w{nw}", "us": us, "TB/s": 2 * x.numel() * 2 / us / 1e6})
        us = median_us(lambda: x.t().contiguous())
        out.append({"variant": f"torch .t().contiguous() {t}x{k}", "us": us, "TB/s": 2 * x.numel() * 2 / us / 1e6})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--sweep", action="store_true", help="also time the hand-picked config list")
    ap.add_argument("--micro", action="store_true", help="also time the transpose beside torch's")
    ap.add_argument("--vectors", default="64", help="comma-separated V values (default: 64)")
    ap.add_argument("--dtypes", default="bfloat16")
    ap.add_argument("--tokens", default=None, help="comma-separated token counts: keep only these cases of the suite")
    ap.add_argument("--chain", type=int, default=0, metavar="N",
                    help="T <= 16: also time each side per layer inside one CUDA graph of N layers with their own "
                         "weight copies (as a decode server replays a model step); 0: off")
    ap.add_argument("--bsr-block", type=int, default=64, help="torch BSR baseline tile size (default: %(default)s)")
    ap.add_argument("--dense-compiled", action="store_true",
                    help="also time dense F.linear under torch.compile(mode='max-autotune-no-cudagraphs'); "
                         "it autotunes every shape anew")
    ap.add_argument("--out", default="bench_linear.json")
    args = ap.parse_args()
    keep_tokens = None if args.tokens is None else {int(t) for t in args.tokens.split(",")}
    if not torch.cuda.is_available():
        print("benchmarks need a CUDA GPU; none found", file=sys.stderr)
        return 2
    result = {"stamp": stamp(), "rows": []}
    ceilings, ceiling_rows = measure_ceilings()  # for each row's ceiling_pct
    for r in ceiling_rows + (micro() if args.micro else []):
        print(json.dumps(r))
        result["rows"].append(r)
    for case in suite(args.suite):
        if keep_tokens is not None and case.tokens not in keep_tokens:
            continue
        for v in map(int, args.vectors.split(",")):
            for dt in args.dtypes.split(","):
                c = LinearCase(case.out_features, case.in_features, case.tokens, case.sparsity, v, dt)
                for r in run_case(c, args.sweep, args.chain, args.bsr_block, args.dense_compiled, ceilings):
                    result["rows"].append(r)
                    print(format_row(c.name, r), flush=True)
                with open(args.out, "w") as f:
                    json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
