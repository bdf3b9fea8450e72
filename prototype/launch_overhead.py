"""Experiment: host-side cost per call (CPU-bound: tiny shapes, one sync after many calls).

    python prototype/launch_overhead.py

Eager small-T timings are dominated by this when a call makes several Triton launches.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import host_us  # noqa: E402

from shflbw.ops.linear import linear as shflbw_linear  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402
from shflbw.kernels.transpose import transpose  # noqa: E402
from shflbw.testing import random_problem  # noqa: E402


def main():
    weight, mask, perm, w = random_problem(256, 256, 64, 0.25, torch.bfloat16, seed=0, device="cuda")
    x1 = torch.randn(1, 256, device="cuda", dtype=torch.bfloat16)
    x2 = torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)
    args = (w.values, w.col_idx, w.group_ptr, w.perm, None, 256)
    wd = weight * mask
    rows = {
        "F.linear T=128": lambda: F.linear(x2, wd),
        "empty 128x256": lambda: torch.empty(128, 256, device="cuda"),
        "transpose (1 Triton launch)": lambda: transpose(x2),
        "decode T=1 (1 launch)": lambda: linear_fwd(x1, *args, path="decode", splits=2),
        "transpose path T=128 (2 launches)": lambda: linear_fwd(x2, *args, path="transpose"),
        "roundtrip T=128 (3 launches)": lambda: linear_fwd(x2, *args, path="roundtrip"),
        "shflbw.linear op T=128": lambda: shflbw_linear(x2, w),
    }
    for name, fn in rows.items():
        print(f"{name:40s} {host_us(fn):7.1f} us/call", flush=True)


if __name__ == "__main__":
    main()
