"""End-to-end forward: Shfl-BW compressed vs dense, both under torch.compile (GPU).

    python benchmarks/run_e2e.py --out e2e.json [--models minilm,bert-large,resnet50] [--batch 256 --seq 128]
        [--image-batch 64]

Random weights (speed does not depend on values) and random Shfl-BW masks on every encoder
Linear (the BERT-style encoders) or on every conv but the stem (torchvision's ResNet-50, batch-norm
folded by the stage regions; the dense side runs channels_last, as issue #6 asks); the compressed
model is gated against the masked dense model, run in fp32, before it is timed. ResNet-50 is timed as CUDA-graph
replays on every side: its 53 convs cost ~150 us of host time each per eager call on the H200
machine (BENCHMARKS.md), more than their GPU time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run_linear import stamp  # noqa: E402
from benchmarks.timing import median_us, rel_error  # noqa: E402
import shflbw  # noqa: E402
from shflbw.nn.masked import set_mask  # noqa: E402
from shflbw.testing import random_shflbw_mask  # noqa: E402

CONFIGS = {
    "minilm": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12),
    "bert-large": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
}


def build(name: str, sparsity: float, vector: int, wanted=("per-layer", "regions")):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=30522, max_position_embeddings=512, **CONFIGS[name])).eval()
    dense = model.to("cuda", torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    import copy

    sparse = copy.deepcopy(dense)
    for n, m in sparse.named_modules():
        if isinstance(m, torch.nn.Linear) and n.startswith("encoder."):
            mask, perm = random_shflbw_mask(m.out_features, m.in_features, vector, 1 - sparsity, generator=gen)
            set_mask(m, mask.cuda(), perm.cuda(), vector)
    masked = copy.deepcopy(sparse)
    variants = {}
    if "per-layer" in wanted:
        variants["per-layer"] = shflbw.compress_(copy.deepcopy(sparse), regions=False)
    if "regions-deferred" in wanted:  # the attention tail's LayerNorm finished by its readers (opt-in)
        variants["regions-deferred"] = shflbw.compress_(copy.deepcopy(sparse), defer_layernorm=True)
    if "regions" in wanted:
        variants["regions"] = shflbw.compress_(sparse)  # the default fusion
    return dense, masked, variants


def unmasked_attention(model) -> None:
    """Run ``model``'s attention as plain SDPA with no mask (the benchmark's batches have no padding).

    Under torch.compile and CUDA-graph capture, transformers cannot check that the padding mask is
    all ones (eager checks it and drops it), so it materialises one, and SDPA then takes its math
    backend: fp32 CUDA-core GEMMs. Dense BERT-large compiled spent 13.8 ms of its 56.6 ms forward in
    sm80 ffma GEMMs plus 3.1 ms of softmax, where eager's cuDNN flash attention took 1.7 ms
    (`prototype/profile_e2e.py --compile`, H200, commit cc63a1e); MiniLM's graph replays took 11.1 ms
    against 3.1 ms eager. Forbidding the math backend instead fails ("Invalid backend"). Dense and
    compressed models share this attention, so both get the same fix.
    """
    _register_unmasked_attention()
    model.set_attn_implementation("sdpa_unmasked")


@functools.cache
def _register_unmasked_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("sdpa_unmasked", attention)
    AttentionMaskInterface.register("sdpa_unmasked", lambda *args, **kwargs: None)


# torchvision CNNs and the name of the stem conv each keeps dense (issue #6: every conv but the stem)
CNNS = {"resnet50": "conv1", "vgg16": "features.0"}


def build_cnn(name: str, sparsity: float, vector: int):
    import copy

    import torchvision

    torch.manual_seed(0)
    dense = getattr(torchvision.models, name)(weights=None).eval().to("cuda", torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    sparse = copy.deepcopy(dense)
    for n, m in sparse.named_modules():
        if isinstance(m, torch.nn.Conv2d) and n != CNNS[name]:  # every conv but the stem
            k = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            mask, perm = random_shflbw_mask(m.out_channels, k, vector, 1 - sparsity, generator=gen)
            set_mask(m, mask.view(m.weight.shape).cuda(), perm.cuda(), vector)
    masked = copy.deepcopy(sparse)
    per_layer = shflbw.compress_(copy.deepcopy(sparse), regions=False)
    regions = shflbw.compress_(sparse)  # ResNet stages as ShflBWResidualStage, VGG's features as a ShflBWConvChain
    cl = torch.channels_last
    # (model, its input's layout): the dense stem (7x7 conv, batch-norm, ReLU, max-pool) runs in
    # the input's layout; the regions convert once, after the max-pool (shflbw::to_chwn).
    variants = {"per-layer": (per_layer.to(memory_format=cl), cl),
                "regions": (copy.deepcopy(regions).to(memory_format=cl), cl),
                "regions-nchw-input": (regions, torch.contiguous_format)}
    return dense.to(memory_format=cl), masked, variants


def time_model(model, call, timed: dict, mode: str | None) -> tuple[float, float | None]:
    """(eager, compiled or None): do_bench medians in us of ``call(model)`` and of
    ``torch.compile(model, mode=mode)`` (mode None: not compiled)."""
    eager = median_us(lambda: call(model), **timed)
    if mode is None:
        return eager, None
    compiled = torch.compile(model, mode=mode)
    return eager, median_us(lambda: call(compiled), **timed)


def gated_row(row: dict, err: float, model, call, timed: dict, mode: str | None, dense_best: float) -> dict:
    """Fill ``row`` with the sparse model's times, or mark it WRONG (then untimed)."""
    row["error_vs_masked_fp32"] = err
    if not err < 2e-2:
        row["status"] = "WRONG"
        return row
    eager, compiled = time_model(model, call, timed, mode)
    row["shflbw_eager_us"], row["shflbw_compiled_us"] = eager, compiled
    row["speedup_vs_faster_dense"] = dense_best / min(t for t in (eager, compiled) if t is not None)
    row["status"] = "ok"
    return row


def emit(row: dict, result: dict, out: str) -> None:
    print(json.dumps(row), flush=True)
    result["rows"].append(row)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def run_cnn(name: str, args, result: dict) -> None:
    """ResNet-50: every side as CUDA-graph replays (the ``_us`` keys are graph times)."""
    dense, masked, variants = build_cnn(name, args.sparsity, args.vector)
    x = torch.randn(args.image_batch, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
    xcl = x.contiguous(memory_format=torch.channels_last)
    timed = dict(graph=True, rep=args.rep)
    with torch.no_grad():
        ref = masked.float()(x.float())  # fp32: the bf16 paths round differently (BENCHMARKS.md, session 5)
        dense_us, dense_c_us = time_model(dense, lambda m: m(xcl), timed, args.compile_mode)
        for label, (sparse, fmt) in variants.items():
            xs = x.contiguous(memory_format=fmt)
            row = {"model": name, "variant": label, "batch": args.image_batch, "sparsity": args.sparsity,
                   "vector": args.vector, "graph": True, "compile_mode": args.compile_mode, "dense_cl_eager_us": dense_us,
                   "dense_cl_compiled_us": dense_c_us}
            # compiling the per-layer baseline (two copies per conv) is not worth its minutes
            gated_row(row, rel_error(sparse(xs).float(), ref), sparse, lambda m: m(xs), timed,
                      None if label == "per-layer" else args.compile_mode,
                      min(dense_us, dense_c_us))
            emit(row, result, args.out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,bert-large")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--image-batch", type=int, default=64, help="batch of 224 x 224 images for the CNNs")
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--vector", type=int, default=64)
    ap.add_argument("--rep", type=int, default=1000, help="ms of repeats per timing (a BERT-large forward takes ~45 ms)")
    ap.add_argument("--graph", action="store_true",
                    help="encoders: time CUDA-graph replays (the host's per-op cost out of the measurement)")
    ap.add_argument("--no-compile", action="store_true", help="encoders: skip the torch.compile rows")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode for the compiled rows ('reduce-overhead': inductor's own CUDA graphs, "
                         "for host-bound models such as MiniLM; do not combine with --graph)")
    ap.add_argument("--hf-attention", action="store_true",
                    help="encoders: keep transformers' own SDPA attention (see unmasked_attention)")
    ap.add_argument("--variants", default="per-layer,regions",
                    help="encoders: per-layer, regions (the default fusion), regions-deferred (compress_(..., "
                         "defer_layernorm=True))")
    ap.add_argument("--out", default="e2e.json")
    args = ap.parse_args()
    for name in args.models.split(","):
        if name not in CONFIGS and name not in CNNS:
            ap.error(f"unknown model {name!r}: choose from {sorted(CONFIGS) + list(CNNS)}")
    result = {"stamp": stamp(), "rows": []}
    for name in args.models.split(","):
        if name in CNNS:
            run_cnn(name, args, result)
            continue
        dense, masked, variants = build(name, args.sparsity, args.vector, args.variants.split(","))
        if not args.hf_attention:
            for m in (dense, masked, *variants.values()):
                unmasked_attention(m)
        ids = torch.randint(0, 30522, (args.batch, args.seq), device="cuda")
        timed = dict(rep=args.rep, graph=args.graph)
        call = lambda m: m(input_ids=ids)  # noqa: E731
        with torch.no_grad():
            # fp32 reference: the regions add the residual in fp32 where the bf16 model rounds first, so
            # two bf16 paths differ by more than either differs from fp32 (BENCHMARKS.md, session 5)
            ref = masked.float()(input_ids=ids).last_hidden_state
            mode = None if args.no_compile else args.compile_mode
            dense_us, dense_c_us = time_model(dense, call, timed, mode)
            for label, sparse in variants.items():
                row = {"model": name, "variant": label, "batch": args.batch, "seq": args.seq, "sparsity": args.sparsity,
                       "vector": args.vector, "graph": args.graph, "hf_attention": args.hf_attention,
                       "compile_mode": mode, "dense_eager_us": dense_us, "dense_compiled_us": dense_c_us}
                err = rel_error(sparse(input_ids=ids).last_hidden_state.float(), ref)
                gated_row(row, err, sparse, call, timed, mode,
                          min(t for t in (dense_us, dense_c_us) if t is not None))
                emit(row, result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
