"""Experiment: the cached launcher against the JIT launch, interleaved in one process (host noise).

    python prototype/launch_ab.py

Ten rounds; each round times every call with the direct launch on, then off (per-call host cost,
many calls, one sync). Medians per call and per mode. Also the conv op against its kernel-level call.
"""

from __future__ import annotations

import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import shflbw  # noqa: E402
from benchmarks.run_mlp import packed  # noqa: E402
from prototype.conv_host import host_us  # noqa: E402
from prototype.conv_probe import conv_problem  # noqa: E402
from shflbw import PackedMLP  # noqa: E402
from shflbw.kernels import launch  # noqa: E402
from shflbw.kernels.conv2d import conv2d_chwn as conv_kernel  # noqa: E402
from shflbw.kernels.linear import linear_fwd  # noqa: E402


def set_fast(on: bool):
    os.environ["SHFLBW_FAST_LAUNCH"] = "1" if on else "0"
    launch.fast_launch_enabled.cache_clear()


def main():
    gen = torch.Generator().manual_seed(0)
    w, wm, p = packed(512, 512, 64, 0.25, gen)
    x = torch.randn(128, 512, device="cuda", dtype=torch.bfloat16)
    w1, _, p1 = packed(1024, 512, 64, 0.25, gen)
    w2, _, p2 = packed(512, 1024, 64, 0.25, gen)
    block = PackedMLP(p1, p2, None, None, "gelu")
    args = (p.values, p.col_idx, p.group_ptr, p.perm, None, 512)
    _, cp, cx, *_ = conv_problem(256, 1024, 1, 1, 0, 14)
    xc = cx.permute(1, 2, 3, 0).contiguous()
    calls = {
        "linear_fwd roundtrip (3 launches)": lambda: linear_fwd(x, *args, path="roundtrip"),
        "shflbw.linear op (transpose path)": lambda: shflbw.linear(x, p),
        "shflbw.mlp op": lambda: shflbw.mlp(x, block),
        "shflbw.conv2d_chwn op (1x1)": lambda: shflbw.conv2d_chwn(xc, cp),
        "kernels.conv2d_chwn (1x1)": lambda: conv_kernel(xc, cp.values, cp.col_idx, cp.group_ptr, cp.perm, None, 1024,
                                                         (256, 1, 1), (1, 1), (0, 0), (1, 1)),
    }
    res = {(n, m): [] for n in calls for m in ("direct", "jit")}
    for _ in range(10):
        for mode in ("direct", "jit"):
            set_fast(mode == "direct")
            for n, fn in calls.items():
                res[(n, mode)].append(host_us(fn, n=200))
    for n in calls:
        d, j = statistics.median(res[(n, "direct")]), statistics.median(res[(n, "jit")])
        print(f"{n:38s} direct {d:6.1f} us  jit {j:6.1f} us  ({(j - d) / j * 100:+.0f} % saved)", flush=True)


if __name__ == "__main__":
    main()
