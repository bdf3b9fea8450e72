"""Fraction of the hardware ceiling (issue #5): how close a row's time is to what the card allows
for the work a layer at that sparsity must do.

The ceilings are measured at the start of each run on its own card (a 512 MB device copy and a
dense 8192^3 bf16 matmul: on the H200 of session 1, 4.13 TB/s and 701 TFLOP/s), not taken from
a spec sheet. The work model is the same for every sparse variant of a case (shflbw, torch 2:4,
torch BSR): the kept weights' multiply-adds, and the kept values read once with X read and the
output written once. Index bytes are left out: the floor is then the same for every sparse
variant of a case, and no variant's percentage is flattered by the bytes its format adds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ceilings:
    bytes_per_us: float  # device copy rate, read + write counted
    flops_per_us: float  # dense bf16 matmul rate (fp16's on Hopper too; the registry has no fp32 cases)


def floor_us(tokens: int, out_features: int, in_features: int, density: float, element_bytes: int,
             ceilings: Ceilings) -> float:
    """The least time the layer needs: its flops at the matmul rate or its bytes at the copy rate."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    flops = 2.0 * tokens * out_features * in_features * density
    moved = element_bytes * (out_features * in_features * density + tokens * in_features + tokens * out_features)
    return max(flops / ceilings.flops_per_us, moved / ceilings.bytes_per_us)


def ceiling_pct(variant: str, us: float | None, tokens: int, out_features: int, in_features: int,
                sparsity: float, element_bytes: int, ceilings: Ceilings | None) -> float | None:
    """Percent of the ceiling a row reaches: dense rows do the dense work, every other row the
    case's sparse work."""
    if not us or ceilings is None:
        return None
    density = 1.0 if variant.startswith("dense") else 1.0 - sparsity
    return 100.0 * floor_us(tokens, out_features, in_features, density, element_bytes, ceilings) / us
