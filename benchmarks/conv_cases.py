"""The conv benchmark registry: every distinct conv layer of ResNet-50 and VGG-16 at 224 x 224.

Each layer comes with how often it occurs in the model, so a geometric mean can weight layers as
the model runs them (issue #6 asks for the geometric mean over ResNet-50's convs, stem excluded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ConvLayer:
    model: str
    cin: int
    cout: int
    kernel: int
    stride: int
    size: int  # input height = width
    count: int  # occurrences in the model

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def name(self) -> str:
        return f"{self.model} {self.kernel}x{self.kernel} {self.cin}->{self.cout} s{self.stride} @{self.size}"


# torchvision's resnet50 (v1.5: the stride sits on the 3x3 conv), bottlenecks [3, 4, 6, 3]; the
# 7x7 stem is left out. 52 convs in all.
RESNET50 = [
    ConvLayer("resnet50", 64, 64, 1, 1, 56, 1),
    ConvLayer("resnet50", 64, 64, 3, 1, 56, 3),
    ConvLayer("resnet50", 64, 256, 1, 1, 56, 4),  # 3 expansions + the first block's projection
    ConvLayer("resnet50", 256, 64, 1, 1, 56, 2),
    ConvLayer("resnet50", 256, 128, 1, 1, 56, 1),
    ConvLayer("resnet50", 128, 128, 3, 2, 56, 1),
    ConvLayer("resnet50", 128, 128, 3, 1, 28, 3),
    ConvLayer("resnet50", 128, 512, 1, 1, 28, 4),
    ConvLayer("resnet50", 256, 512, 1, 2, 56, 1),  # projection
    ConvLayer("resnet50", 512, 128, 1, 1, 28, 3),
    ConvLayer("resnet50", 512, 256, 1, 1, 28, 1),
    ConvLayer("resnet50", 256, 256, 3, 2, 28, 1),
    ConvLayer("resnet50", 256, 256, 3, 1, 14, 5),
    ConvLayer("resnet50", 256, 1024, 1, 1, 14, 6),
    ConvLayer("resnet50", 512, 1024, 1, 2, 28, 1),  # projection
    ConvLayer("resnet50", 1024, 256, 1, 1, 14, 5),
    ConvLayer("resnet50", 1024, 512, 1, 1, 14, 1),
    ConvLayer("resnet50", 512, 512, 3, 2, 14, 1),
    ConvLayer("resnet50", 512, 512, 3, 1, 7, 2),
    ConvLayer("resnet50", 512, 2048, 1, 1, 7, 3),
    ConvLayer("resnet50", 1024, 2048, 1, 2, 14, 1),  # projection
    ConvLayer("resnet50", 2048, 512, 1, 1, 7, 2),
]

# VGG-16's 3x3 convs after the first (3 -> 64: a 27-wide reduction, nothing to prune in V-row groups).
VGG16 = [
    ConvLayer("vgg16", 64, 64, 3, 1, 224, 1),
    ConvLayer("vgg16", 64, 128, 3, 1, 112, 1),
    ConvLayer("vgg16", 128, 128, 3, 1, 112, 1),
    ConvLayer("vgg16", 128, 256, 3, 1, 56, 1),
    ConvLayer("vgg16", 256, 256, 3, 1, 56, 2),
    ConvLayer("vgg16", 256, 512, 3, 1, 28, 1),
    ConvLayer("vgg16", 512, 512, 3, 1, 28, 2),
    ConvLayer("vgg16", 512, 512, 3, 1, 14, 3),
]

LAYERS = {"resnet50": RESNET50, "vgg16": VGG16}


def weighted_geomean(pairs: list[tuple[float, int]]) -> float:
    """Geometric mean of values weighted by counts: [(speedup, count), ...]."""
    total = sum(c for _, c in pairs)
    if total == 0:
        raise ValueError("no layers to average")
    return math.exp(sum(c * math.log(v) for v, c in pairs) / total)
