"""Experiment: the Triton Shfl-BW conv (batch-innermost) against cuDNN on a few ResNet-50 / VGG-16 layers.

    python prototype/conv_probe.py

bf16, batch 64, 75 %, V = 64; cuDNN timed in NCHW and channels_last (cudnn.benchmark on), the
faster counts. The Shfl-BW kernel is timed in its own layout (C, H, W, N); the two conversions
(NCHW -> CHWN and back, PyTorch permute copies) are reported beside. Gated on correctness.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_conv import conv_problem  # noqa: E402  (re-exported for sweep_stages / conv_host)
from benchmarks.timing import gated, median_us  # noqa: E402
from shflbw import conv2d_chwn  # noqa: E402
from shflbw.kernels.conv2d import ConvConfig  # noqa: E402
from shflbw.kernels.conv2d import conv2d_chwn as kernel  # noqa: E402

LAYERS = [  # (name, Cin, Cout, k, stride, pad, H)
    ("vgg conv3_2 3x3", 256, 256, 3, 1, 1, 56),
    ("vgg conv4_2 3x3", 512, 512, 3, 1, 1, 28),
    ("r50 3x3 128", 128, 128, 3, 1, 1, 28),
    ("r50 3x3 256", 256, 256, 3, 1, 1, 14),
    ("r50 1x1 256->1024", 256, 1024, 1, 1, 0, 14),
    ("r50 1x1 1024->256", 1024, 256, 1, 1, 0, 14),
]


def main():
    torch.backends.cudnn.benchmark = True
    for name, cin, cout, k, st, pad, h in LAYERS:
        w, p, x, ref, dref, xcl, wcl = conv_problem(cin, cout, k, st, pad, h)
        d1 = gated("cudnn-nchw", lambda: F.conv2d(x, w, stride=st, padding=pad), dref, torch.bfloat16)
        d2 = gated("cudnn-cl", lambda: F.conv2d(xcl, wcl, stride=st, padding=pad), dref, torch.bfloat16)
        xc = x.permute(1, 2, 3, 0).contiguous()
        sp = gated("shflbw-chwn", lambda: conv2d_chwn(xc, p, stride=st, padding=pad).permute(3, 0, 1, 2), ref, torch.bfloat16)
        variants = {}
        for label, cfg in [("bn128", ConvConfig()), ("bn64", ConvConfig(block_n=64)),
                           ("bn256-w8", ConvConfig(block_n=256, num_warps=8))]:
            fn = lambda: kernel(xc, p.values, p.col_idx, p.group_ptr, p.perm, None, cout, (cin, k, k), (st, st),  # noqa: E731
                                (pad, pad), (1, 1), config=cfg).permute(3, 0, 1, 2)
            variants[label] = gated(label, fn, ref, torch.bfloat16)
        t_in = median_us(lambda: x.permute(1, 2, 3, 0).contiguous())
        y = conv2d_chwn(xc, p, stride=st, padding=pad)
        t_out = median_us(lambda: y.permute(3, 0, 1, 2).contiguous(memory_format=torch.channels_last))
        best = min(r["us"] for r in (d1, d2) if r["us"])
        spd = f"{best / sp['us']:.2f}x" if sp["us"] else sp["status"]
        print(f"{name:22s} cudnn nchw {d1['us']:7.1f} cl {d2['us']:7.1f} | shflbw {sp['us'] or 0:7.1f} us {spd} "
              f"(err {sp['error']:.1e}) | to CHWN {t_in:6.1f} back {t_out:6.1f} us | "
              + " ".join(f"{k} {best / r['us']:.2f}x" if r["us"] else f"{k} {r['status']}" for k, r in variants.items()),
              flush=True)


if __name__ == "__main__":
    main()
