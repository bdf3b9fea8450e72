"""One launch of each token-major CUDA variant on 4096 x 4096, T = 4096, 75 %, for Nsight Compute.

    ncu --clock-control none --kernel-name regex:shflbw_tm --metrics <list> python prototype/tm_mma_profile.py

Why: what bounds the kernel decides the next step. L2 throughput near the 7.5-8.3 TB/s the Triton
kernels reach says the bytes must shrink (clusters sharing X, then the weights); a busy tensor pipe
says wgmma (mma.sync issues at most about half of Hopper's tensor rate); bank conflicts on the
2-byte gathers say the column order. prototype/device_s18.sh runs it under ncu where ncu works
(Firecracker machines; not under gVisor). The output is checked first, so a profile is never of a
wrong kernel.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.join(_ROOT, "src")]

from shflbw import ShflBWMatrix  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402
from tm_build import Variant, compile_variant, launch  # noqa: E402
from tm_pack import VEC, prepare  # noqa: E402

PROFILED = [Variant("tm", 256, 2, "sorted"), Variant("tm", 256, 2), Variant("cluster", 256, 2, cl=2),
            Variant("cluster", 256, 3, cl=2, straddle=True)]


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    m = k = t = 4096
    weight = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    mask, perm = random_shflbw_mask(m, k, VEC, 0.25, generator=gen)
    w = ShflBWMatrix.from_dense(weight.cuda(), mask.cuda(), perm.cuda(), vector=VEC)
    x = torch.randn(t, k, device="cuda").to(torch.bfloat16)
    ref = F.linear(x.float(), (weight.float() * mask).cuda())
    for v in PROFILED:
        kernel = compile_variant(v)
        p = prepare(w, v.kc, v.order, v.straddle)
        out = torch.full((t, m), float("nan"), device="cuda", dtype=torch.bfloat16)
        launch(v, kernel, p, x, None, out)
        torch.cuda.synchronize()
        err = ((out.float() - ref).norm() / ref.norm()).item()
        print(f"{v.name}: rel err {err:.2e}" + ("" if err < 2e-2 else " WRONG"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
