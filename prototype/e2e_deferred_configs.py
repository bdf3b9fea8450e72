"""Experiment: BERT-large's deferred-LayerNorm path under several launch configs, in one process
beside dense and the default fusion (compiled forwards, GPU).

    python prototype/e2e_deferred_configs.py --out e2e_deferred.json [--model bert-large]

Why (session 11): the deferred path was 1.63x against 1.67x for the default on the one H100 run
(session 9). Offline ptxas (prototype/regs_offline.py) showed its two new epilogues spilling at
their current configs: fc1 finishing the norm (NORM_IN) 255 registers + 32 B spilled at 4 warps,
130 and none at 8; the MLP tail normalising its residual (NORM_RES) at BT 32 / 8 warps 1240 B,
BT 16 / 8 warps 128 B. The configs are read at call time inside the custom ops (opaque to
torch.compile), so one compiled model is timed under each setting; each setting is gated against
the masked model in fp32 before it is timed.

Result (H100, session 11, BENCHMARKS.md): the current configs were the fastest; deferred 24.25 ms
against 24.15 ms for the default fusion, fc1 at 8 warps 26.37 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_e2e import build, unmasked_attention  # noqa: E402
from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import median_us, rel_error  # noqa: E402
from shflbw.kernels import configs  # noqa: E402

# (label, fc1 NORM_IN warps, the NORM_RES tail's (BT, warps) or None for addnorm_config's choice)
SETTINGS = [("current", 4, None), ("fc1-w8", 8, None), ("fc1-w8 tail-BT16w8", 8, (16, 8)),
            ("fc1-w8 tail-BT16w4", 8, (16, 4)), ("fc1-w4 tail-BT16w8", 4, (16, 8))]


def apply(fc1_warps: int, tail) -> None:
    configs.NORM_IN_NUM_WARPS = fc1_warps
    default = _DEFAULT_ADDNORM

    def addnorm_config(features, residual=True, norm_res=False):
        if tail is None or not norm_res or features > 1024:
            return default(features, residual, norm_res)
        return configs.AddNormConfig(one_pass=True, block_f=0, block_t=tail[0], num_warps=tail[1])

    configs.addnorm_config = addnorm_config  # kernels/addnorm.py imports it at call time


_DEFAULT_ADDNORM = configs.addnorm_config


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bert-large")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rep", type=int, default=1000)
    ap.add_argument("--out", default="e2e_deferred.json")
    args = ap.parse_args()
    dense, masked, variants = build(args.model, 0.75, 64, ("regions", "regions-deferred"))
    for m in (dense, masked, *variants.values()):
        unmasked_attention(m)
    ids = torch.randint(0, 30522, (args.batch, args.seq), device="cuda")
    result = {"stamp": stamp(), "model": args.model, "rows": []}

    def emit(row):
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    with torch.no_grad():
        ref = masked.float()(input_ids=ids).last_hidden_state
        dense_c = torch.compile(dense)
        emit({"variant": "dense", "compiled_us": median_us(lambda: dense_c(input_ids=ids), rep=args.rep)})
        runs = [("regions", variants["regions"], [("default", 4, None)]),
                ("regions-deferred", variants["regions-deferred"], SETTINGS)]
        for name, model, settings in runs:
            compiled = torch.compile(model)
            for label, warps, tail in settings:
                apply(warps, tail)
                err = rel_error(compiled(input_ids=ids).last_hidden_state.float(), ref)
                row = {"variant": name, "setting": label, "error_vs_masked_fp32": err}
                if err < 2e-2:
                    row["compiled_us"] = median_us(lambda: compiled(input_ids=ids), rep=args.rep)
                    row["speedup"] = result["rows"][0]["compiled_us"] / row["compiled_us"]
                else:
                    row["status"] = "WRONG"
                emit(row)
        apply(4, None)
        # the dense side again, last, to bound drift between the first and last timings
        emit({"variant": "dense-again", "compiled_us": median_us(lambda: dense_c(input_ids=ids), rep=args.rep)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
