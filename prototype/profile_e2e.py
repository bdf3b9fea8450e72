"""Experiment: where a compressed model's forward spends its GPU time (H200, torch.profiler).

    python prototype/profile_e2e.py [--model resnet50|bert-large|minilm] [--vector 64] [--input nchw|cl]
        [--dense] [--compile]

Builds the model as benchmarks/run_e2e.py does (ResNet-50: every conv but the stem in Shfl-BW at
75 %, the stages as ShflBWResidualStage regions; the BERT-style encoders: every encoder Linear,
MLP regions), runs a few eager forwards under torch.profiler and prints the CUDA kernels by total
time, so the time outside the sparse layers can be seen beside them. ``--dense`` profiles the
dense model instead, for the same breakdown on the other side. ``--compile`` profiles the
torch.compile'd model (run_e2e.py timed dense BERT-large compiled at 57 ms against 42 ms eager).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_e2e import CNNS, build, build_cnn, unmasked_attention  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--vector", type=int, default=64)
    ap.add_argument("--input", choices=("nchw", "cl"), default="cl", help="ResNet input layout")
    ap.add_argument("--batch", type=int, default=None, help="images (64) or sequences (256)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dense", action="store_true", help="profile the dense model")
    ap.add_argument("--variant", default="regions", help="encoders: a run_e2e.py variant (regions, regions-deferred)")
    ap.add_argument("--host", action="store_true", help="also the host side: CPU time by op, and the wall time")
    ap.add_argument("--compile", action="store_true", help="profile torch.compile(model)")
    ap.add_argument("--sequence", type=int, default=0,
                    help="also print the first N kernels of the last forward in launch order, with their times")
    ap.add_argument("--hf-attention", action="store_true",
                    help="encoders: keep transformers' own attention (run_e2e.py's default is unmasked SDPA)")
    args = ap.parse_args()
    if args.model in CNNS:
        dense, masked, variants = build_cnn(args.model, 0.75, args.vector)
        model, fmt = variants["regions" if args.input == "cl" else "regions-nchw-input"]
        x = torch.randn(args.batch or 64, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
        if args.dense:
            model, fmt = dense, torch.channels_last
        x = x.contiguous(memory_format=fmt)
        forward = lambda: model(x)  # noqa: E731
    else:
        dense, masked, variants = build(args.model, 0.75, args.vector, (args.variant,))
        model = dense if args.dense else variants[args.variant]
        if not args.hf_attention:
            unmasked_attention(model)  # as run_e2e.py times it (its unmasked_attention says why)
        ids = torch.randint(0, 30522, (args.batch or 256, args.seq), device="cuda")
        forward = lambda: model(input_ids=ids)  # noqa: E731
    if args.compile:
        compiled = torch.compile(model)
        forward = (lambda: compiled(x)) if args.model in CNNS else (lambda: compiled(input_ids=ids))  # noqa: E731
    runs = 5
    with torch.no_grad():
        for _ in range(3):
            forward()
        torch.cuda.synchronize()
        if args.host:
            import time

            t0 = time.perf_counter()
            for _ in range(runs):
                forward()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            print(f"wall per forward: {(t2 - t0) / runs * 1e3:.1f} ms (host returned after {(t1 - t0) / runs * 1e3:.1f} ms)")
            from benchmarks.timing import median_us

            print(f"do_bench median (L2 flushed between calls): {median_us(forward, rep=1000) / 1e3:.1f} ms")
        activities = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if args.host else [])
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(runs):
                forward()
            torch.cuda.synchronize()
    # kernels only (with the CPU side on, the ops above them also carry their kernels' time)
    rows = sorted((e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA),
                  key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in rows) / runs
    side = "dense" if args.dense else f"shflbw V = {args.vector}"
    print(f"GPU time per forward: {total:.0f} us ({args.model}, {side})")
    for e in rows[:25]:
        print(f"{e.device_time_total / runs:9.1f} us  x{e.count // runs:3d}  {e.key[:110]}")
    if args.sequence:
        kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                         key=lambda e: e.time_range.start)
        last = kernels[-(len(kernels) // runs):]
        print(f"first {args.sequence} kernels of the last forward, in order:")
        for e in last[:args.sequence]:
            print(f"{e.time_range.elapsed_us():9.1f} us  {e.name[:100]}")
    if args.host:
        print("host: self CPU time per forward")
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:25]:
            print(f"{e.self_cpu_time_total / runs:9.1f} us  x{e.count // runs:4d}  {e.key[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
