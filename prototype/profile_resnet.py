"""Experiment: where a compressed ResNet-50's forward spends its GPU time (H200, torch.profiler).

    python prototype/profile_resnet.py [--vector 64] [--input nchw|cl]

Builds the model as benchmarks/run_e2e.py does (every conv but the stem in Shfl-BW at 75 %, the
stages as ShflBWResidualStage regions), runs a few forwards under torch.profiler and prints the
CUDA kernels by total time, so the time outside the sparse convs (stem, pooling, the entry
conversion) can be seen beside the convs themselves.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_e2e import build_cnn  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vector", type=int, default=64)
    ap.add_argument("--input", choices=("nchw", "cl"), default="nchw")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    dense, masked, variants = build_cnn("resnet50", 0.75, args.vector)
    model, fmt = variants["regions" if args.input == "cl" else "regions-nchw-input"]
    x = torch.randn(args.batch, 3, 224, 224, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=fmt)
    runs = 5
    with torch.no_grad():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                model(x)
            torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in rows) / runs
    print(f"GPU time per forward: {total:.0f} us (input {args.input}, V = {args.vector})")
    for e in rows[:25]:
        print(f"{e.device_time_total / runs:9.1f} us  x{e.count // runs:3d}  {e.key[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
