"""``shflbw example``: the end-to-end path on one random layer, every step checked.

prune (Shfl-BW, V = 64, 75 %) -> pack -> save -> load -> run through shflbw.linear, compared with
the dense product on the masked weight. Until ``shflbw demo`` exists (#7) this is the main job.
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F


def run_example(out: str = "out/example", seed: int = 0) -> int:
    import shflbw
    from shflbw.prune import prune

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m, k, tokens, vector, sparsity = 1024, 768, 64, 64, 0.75
    weight = torch.randn(m, k) * torch.rand(m, 1) * torch.rand(1, k)  # uneven row/column scales, like real layers
    print(f"layer {m} x {k}, Shfl-BW V={vector}, sparsity {sparsity:.0%}, device {device}")

    t0 = time.monotonic()
    results = {p: prune(weight, sparsity, vector, p, time_budget=10) for p in ("unstructured", "vector", "shfl_bw")}
    for name, r in results.items():
        print(f"  prune {name:13s} kept importance {r.kept_importance:.3f}")
    r = results["shfl_bw"]
    print(f"  search took {time.monotonic() - t0:.2f} s")

    w = shflbw.ShflBWMatrix.from_dense(weight, r.mask, r.perm, vector=vector)
    if not torch.equal(w.to_dense(), weight * r.mask):
        print("FAIL: pack/unpack round trip is not exact")
        return 1
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "layer.safetensors")
    w.to(dtype=torch.bfloat16).save(path)
    back = shflbw.ShflBWMatrix.load(path, device=device)
    dense_bytes = m * k * 2
    print(f"  packed {back}; file {os.path.getsize(path) / dense_bytes:.1%} of the dense bf16 weight")

    x = torch.randn(tokens, k, device=device, dtype=torch.bfloat16)
    y = shflbw.linear(x, back)
    ref = F.linear(x.float(), (weight * r.mask).to(device, torch.bfloat16).float())
    err = ((y.float() - ref).norm() / ref.norm()).item()
    print(f"  shflbw.linear vs dense masked product: relative error {err:.2e}")
    if not err < 1e-2:
        print("FAIL: output does not match the dense product")
        return 1
    print("OK")
    return 0
