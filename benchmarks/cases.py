"""The registry of benchmark cases: (out, in) shapes from real models, token counts, sparsities."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# (out_features, in_features): BERT-base MLP, BERT-large/Llama MLP, attention projections, Llama-2-7B and
# Llama-3-8B MLP layers.
LAYERS = [(768, 3072), (3072, 768), (1024, 4096), (4096, 1024), (4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)]
TOKENS = [1, 16, 128, 512, 2048, 8192]
SPARSITIES = [0.5, 0.75, 0.875, 0.9375]
VECTORS = [32, 64, 128]


@dataclass(frozen=True)
class LinearCase:
    out_features: int
    in_features: int
    tokens: int
    sparsity: float
    vector: int = 64
    dtype: str = "bfloat16"

    @property
    def name(self) -> str:
        return f"M{self.out_features}-K{self.in_features}-T{self.tokens}-V{self.vector}-s{self.sparsity}-{self.dtype}"


def suite(name: str) -> list[LinearCase]:
    if name == "quick":  # a first look: the headline shapes, bf16, V = 64
        cases = []
        shapes = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)]
        for (m, k), t, s in itertools.product(shapes, [1, 16, 128, 512, 4096], [0.5, 0.75, 0.875]):
            cases.append(LinearCase(m, k, t, s))
        return cases
    if name == "decode":  # weight-bound token counts, timed as CUDA-graph replays
        shapes = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (3072, 768)]
        return [LinearCase(m, k, t, s) for (m, k), t, s in itertools.product(shapes, [1, 16], [0.5, 0.75, 0.875])]
    if name == "bert-large":  # BERT-large's Linear shapes at the end-to-end benchmark's 256 x 128 tokens
        shapes = [(1024, 1024), (4096, 1024), (1024, 4096)]
        return [LinearCase(m, k, t, 0.75) for (m, k), t in itertools.product(shapes, [32768, 4096])]
    if name == "prefill":  # the quick shapes at T >= 128 only
        return [c for c in suite("quick") if c.tokens >= 128]
    if name == "linear":  # the full registry of issue 5, bf16 and V = 64 (V and dtype sweeps: see --vectors/--dtypes)
        return [LinearCase(m, k, t, s) for (m, k), t, s in itertools.product(LAYERS, TOKENS, SPARSITIES)]
    raise ValueError(f"unknown suite {name!r}: quick, decode, bert-large, prefill, linear")
