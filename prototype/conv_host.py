"""Experiment: are ResNet-50's small Shfl-BW convs bound by host time? (the bimodal 1x1 timings)

    python prototype/conv_host.py

For each layer, three times in one process: the op's host cost per call (many calls, one sync),
its eager do_bench median, and its CUDA-graph replay median (GPU time alone); cuDNN beside.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import median_us, host_us  # noqa: E402
from prototype.conv_probe import conv_problem  # noqa: E402
from shflbw import conv2d_chwn  # noqa: E402

LAYERS = [("r50 1x1 256->1024", 256, 1024, 1, 1, 0, 14), ("r50 1x1 1024->256", 1024, 256, 1, 1, 0, 14),
          ("r50 3x3 256", 256, 256, 3, 1, 1, 14), ("vgg conv4_2 3x3", 512, 512, 3, 1, 1, 28)]


def main():
    torch.backends.cudnn.benchmark = True
    for name, cin, cout, k, st, pad, h in LAYERS:
        w, p, x, ref, dref, xcl, wcl = conv_problem(cin, cout, k, st, pad, h)
        xc = x.permute(1, 2, 3, 0).contiguous()
        fn = lambda: conv2d_chwn(xc, p, stride=st, padding=pad)  # noqa: E731
        dense = lambda: F.conv2d(xcl, wcl, stride=st, padding=pad)  # noqa: E731
        for rnd in range(3):
            print(f"{name:20s} run {rnd}: shflbw host {host_us(fn):6.1f} us/call, eager {median_us(fn):6.1f}, "
                  f"graph {median_us(fn, graph=True):6.1f} | cudnn-cl host {host_us(dense):6.1f}, eager "
                  f"{median_us(dense):6.1f}, graph {median_us(dense, graph=True):6.1f}", flush=True)


if __name__ == "__main__":
    main()
