"""Experiment: the feature-major attention kernel (kernels/attention.py) against PyTorch's SDPA.

    python prototype/sweep_attention.py --out attention.json

Why: ``ShflBWSelfAttention`` replaced SDPA plus four transposes per layer (Q, K, V back to
token-major, the context to feature-major) by one Triton kernel reading Q, K, V where the SpMMs
wrote them. BERT-large went 1.40x -> 1.47x end to end under torch.compile (BENCHMARKS.md, session
6) with the kernel's first, untuned config; cuDNN's flash attention took 71 us a layer there.
Each case times, as CUDA-graph replays: SDPA on token-major Q/K/V views (the dense model's
attention), SDPA plus the transposes the old path paid, and the kernel at several (BM, BN, warps,
stages), unmasked and with Hugging Face's boolean padding mask [B, 1, S, S]. Gated on correctness
against float32 SDPA.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.results_io import emit  # noqa: E402
from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import gated  # noqa: E402
from shflbw.kernels.attention import attention_fm  # noqa: E402
from shflbw.kernels.transpose import transpose  # noqa: E402

# (batch, seq, heads, head size): BERT-large and MiniLM at the end-to-end benchmark's 256 x 128
# tokens, and a longer sequence
CASES = [(256, 128, 16, 64), (256, 128, 12, 32), (32, 512, 16, 64)]
# (BM, BN, warps, stages). Session 7 (commit c175f4a) also timed the first, key-major form of the
# kernel (scores^T = K Q^T): 149-157 us against 91-100 us here for BERT-large; it was removed.
# Session 8 (commit ffb5407, sweep_attention_ffb5407.json) also ran the grid head-major (heads varying
# slowest, so the programs running together read long token runs of few rows): no gain (BERT-large
# 91.6 us against 90.9 at 64, 64, 4, 3), removed; 4 stages did not help either (102.8 us).
CONFIGS = [(64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 4, 4), (64, 32, 4, 3), (128, 64, 8, 3), (64, 128, 4, 3)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="attention.json")
    args = ap.parse_args()
    result = {"stamp": stamp(), "rows": []}
    timed = dict(graph=True, rep=100)
    for b, s, h, d in CASES:
        m, t = h * d, b * s
        qkv = torch.randn(3 * m, t, device="cuda", dtype=torch.bfloat16)  # feature-major, as the SpMMs write it
        tok = qkv.t().contiguous()  # [T, 3M] token-major: what the per-layer path hands SDPA
        views = [tok[:, i * m:(i + 1) * m].view(b, s, h, d).transpose(1, 2) for i in range(3)]
        pad = torch.ones(b, s, dtype=torch.bool, device="cuda")
        pad[b // 2:, s - s // 4:] = False  # half the batch padded by a quarter
        mask = pad[:, None, None, :].expand(b, 1, s, s).contiguous()
        row = {"case": f"B{b}-S{s}-H{h}-D{d}", "variants": {}}
        for masked in (False, True):
            am = mask if masked else None
            ref = F.scaled_dot_product_attention(*[v.float() for v in views], attn_mask=am)
            ref_fm = ref.transpose(1, 2).reshape(t, m).t()
            # SDPA alone, compared in its own [B, H, S, D] layout (no copy timed with it)
            sdpa = gated("sdpa", lambda: F.scaled_dot_product_attention(*views, attn_mask=am), ref, torch.bfloat16,
                         **timed)

            def old_path():
                # the per-layer path: Q, K, V each back to token-major, SDPA, the context to feature-major
                qt, kt, vt = (transpose(qkv[i * m:(i + 1) * m]).view(b, s, h, d).transpose(1, 2) for i in range(3))
                return transpose(F.scaled_dot_product_attention(qt, kt, vt, attn_mask=am).transpose(1, 2).reshape(t, m))

            tag = "masked" if masked else "unmasked"
            row["variants"][f"sdpa {tag}"] = sdpa["us"]
            row["variants"][f"sdpa + 4 transposes {tag}"] = gated("old", old_path, ref_fm, torch.bfloat16, **timed)["us"]
            for bm, bn, nw, st in CONFIGS:
                if bm > s or bn > s:
                    continue
                name = f"fm {bm},{bn},{nw},{st}"
                r = gated(name, lambda: attention_fm(qkv, b, s, h, d ** -0.5, mask=am, block_m=bm, block_n=bn,
                                                     num_warps=nw, num_stages=st),
                          ref_fm, torch.bfloat16, **timed)
                row["variants"][f"{name} {tag}"] = r["us"]
        emit(result, args.out, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
