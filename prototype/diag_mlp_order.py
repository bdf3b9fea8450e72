"""Why the MLP block at 87.5 % ran 1.9-2.1x inside run_mlp.py but 3.06x alone (BENCHMARKS.md).

    python prototype/diag_mlp_order.py

Hypothesis: something run_mlp.py does before timing the block (torch.compile of the dense block)
slows the Triton kernels that follow. Times the block, then compiles and runs the dense block,
then times the block again, in one process; then the per-kernel split with torch.profiler.
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_mlp import packed  # noqa: E402
from benchmarks.timing import median_us  # noqa: E402
from shflbw import PackedMLP, mlp  # noqa: E402


def case(hdim, s, t):
    gen = torch.Generator().manual_seed(0)
    w1, _, p1 = packed(hdim, 4096, 64, 1 - s, gen)
    w2, _, p2 = packed(4096, hdim, 64, 1 - s, gen)
    b1 = torch.randn(hdim, generator=gen).to(torch.bfloat16).cuda()
    b2 = torch.randn(4096, generator=gen).to(torch.bfloat16).cuda()
    x = torch.randn(t, 4096, device="cuda", dtype=torch.bfloat16)
    return x, (w1, b1, w2, b2), PackedMLP(p1, p2, b1, b2, "gelu")


def kernel_split(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / e.count) for e in prof.key_averages() if e.device_time_total > 0]
    return ", ".join(f"{k[:40]} {us:.1f}us" for k, us in sorted(rows, key=lambda r: -r[1])[:6])


cases = [(11008, 0.875, 4096), (11008, 0.75, 4096), (11008, 0.875, 2048), (11008, 0.75, 2048)]
built = {c: case(*c) for c in cases}
for c in cases:
    x, dense, block = built[c]
    print(c, "block before compile", round(median_us(lambda: mlp(x, block)), 1), "us |", kernel_split(lambda: mlp(x, block)), flush=True)
dense_c = torch.compile(lambda x, w1, b1, w2, b2: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2))
for c in cases:
    x, dense, block = built[c]
    print(c, "dense eager", round(median_us(lambda: F.linear(F.gelu(F.linear(x, dense[0], dense[1])), dense[2], dense[3])), 1),
          "compiled", round(median_us(lambda: dense_c(x, *dense)), 1), flush=True)
for c in cases:
    x, dense, block = built[c]
    print(c, "block after compile", round(median_us(lambda: mlp(x, block)), 1), "us |", kernel_split(lambda: mlp(x, block)), flush=True)
