"""``ShflBWConfig``: what to prune and how, a frozen dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field

IMPORTANCE = ("magnitude", "activation")
LAYER_TYPES = ("linear", "conv2d")  # nn.Linear; nn.Conv2d with groups = 1 and zero padding
# Skipped unless named in ``include``: embeddings and output heads carry most of a model's
# sensitivity and little of its compute (torchao and SparseML skip them by default too).
DEFAULT_EXCLUDE = ("*embed*", "*lm_head*", "*classifier*", "*pooler*", "*head")


def _check_sparsity(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {value!r}")


def _check_vector(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 16:
        raise ValueError(f"vector (V) must be a positive multiple of 16, got {value!r}")


@dataclass(frozen=True)
class LayerOverride:
    sparsity: float | None = None
    vector: int | None = None


@dataclass(frozen=True)
class ShflBWConfig:
    sparsity: float = 0.75
    vector: int = 64
    importance: str = "magnitude"
    balanced: bool = False
    include: tuple[str, ...] = ("*",)  # fnmatch patterns on module names
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    overrides: dict[str, LayerOverride] = field(default_factory=dict)  # pattern -> per-layer settings
    time_budget: float | None = 30.0  # seconds of permutation search per layer
    keep_kernels: bool = False  # Conv2d: keep or prune whole R x S kernels of an input channel together
    layer_types: tuple[str, ...] = LAYER_TYPES  # which module types the patterns may select

    def __post_init__(self):
        _check_sparsity(self.sparsity)
        _check_vector(self.vector)
        if self.importance not in IMPORTANCE:
            raise ValueError(f"importance must be one of {IMPORTANCE}, got {self.importance!r}")
        for name in ("include", "exclude", "layer_types"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise TypeError(f"{name} must be a sequence of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not self.layer_types or set(self.layer_types) - set(LAYER_TYPES):
            raise ValueError(f"layer_types must be a non-empty subset of {LAYER_TYPES}, got {self.layer_types!r}")
        fixed = {}
        for pattern, o in self.overrides.items():
            o = LayerOverride(**o) if isinstance(o, dict) else o
            if not isinstance(o, LayerOverride):
                raise TypeError(f"override for {pattern!r} must be a LayerOverride or dict, got {type(o).__name__}")
            if o.sparsity is not None:
                _check_sparsity(o.sparsity)
            if o.vector is not None:
                _check_vector(o.vector)
            fixed[pattern] = o
        object.__setattr__(self, "overrides", fixed)

    def selects(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.exclude
        )

    def for_layer(self, name: str) -> tuple[float, int]:
        """(sparsity, vector) for a module name: the last matching override wins."""
        sparsity, vector = self.sparsity, self.vector
        for pattern, o in self.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                sparsity = sparsity if o.sparsity is None else o.sparsity
                vector = vector if o.vector is None else o.vector
        return sparsity, vector

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["include"], d["exclude"], d["layer_types"] = list(self.include), list(self.exclude), list(self.layer_types)
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ShflBWConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("config JSON must be an object")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        for name in ("include", "exclude", "layer_types"):
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        return cls(**d)
