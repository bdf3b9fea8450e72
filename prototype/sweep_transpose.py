"""Experiment: tile shape and warps of the token-major <-> feature-major transpose (kernels/transpose.py).

    python prototype/sweep_transpose.py --out transpose.json

Why: on the H100 of session 16 the roundtrip's input transpose of 4096 x 4096 bf16 took 28.6 us,
64 MB moved at 2.35 TB/s, 70 % of the card's 3.35 TB/s, while the output transpose of 14336 rows
(with bias) reached 2.67 TB/s: the small case may be leaving bandwidth behind. Every variant's
output is compared with ``x.t()`` (exactly; with a bias, to one bf16 rounding) before it is timed; CUDA-graph replays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import median_us, rel_error  # noqa: E402
from shflbw.kernels.transpose import transpose  # noqa: E402

CONFIGS = [(64, 64, 4), (64, 64, 8), (64, 128, 4), (128, 64, 4), (128, 128, 4), (128, 128, 8), (32, 128, 4),
           (128, 32, 4), (64, 256, 8), (256, 64, 8)]
# (R, C) of the transposed operand: X[T, K] in, Y_fm[M, T] out (with bias)
SHAPES = [(4096, 4096, False), (4096, 11008, False), (2048, 4096, False), (8192, 4096, False),
          (4096, 4096, True), (11008, 4096, True), (14336, 4096, True)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="transpose.json")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    gen = torch.Generator(device="cuda").manual_seed(0)
    for r, c, with_bias in SHAPES:
        x = torch.randn(r, c, device="cuda", generator=gen).to(torch.bfloat16)
        bias = torch.randn(r, device="cuda", generator=gen).to(torch.bfloat16) if with_bias else None
        ref = (x.float() + bias.float()[:, None]).to(torch.bfloat16).t() if with_bias else x.t()
        case = f"{r}x{c}" + ("+bias" if with_bias else "")
        nbytes = 2 * x.numel() * x.element_size()
        for br, bc, w in CONFIGS:
            y = transpose(x, br, bc, w, bias=bias)
            # exact without bias; with it, one bf16 rounding of the float32 sum (the CPU interpreter
            # truncates where the GPU rounds to nearest)
            ok = bool(torch.equal(y, ref)) if bias is None else rel_error(y, ref) < 4e-3
            us = median_us(lambda br=br, bc=bc, w=w: transpose(x, br, bc, w, bias=bias), graph=True) if ok else None
            row = {"case": case, "config": [br, bc, w], "ok": ok, "us": us, "tb_per_s": nbytes / us / 1e6 if us else None}
            result["rows"].append(row)
            print(f"{case} {br}x{bc} w{w}: " + (f"{us:.1f} us {row['tb_per_s']:.2f} TB/s" if ok else "WRONG"), flush=True)
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
