"""The benchmark registries (no GPU needed): the conv layer lists match the models they name."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.conv_cases import RESNET50, VGG16, weighted_geomean  # noqa: E402


def test_resnet50_registry_counts_52_distinct_convs_after_the_stem():
    assert sum(layer.count for layer in RESNET50) == 52
    assert len({layer.name for layer in RESNET50}) == len(RESNET50)  # distinct layers


def test_resnet50_registry_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet50()
    convs = [m for m in model.modules() if m.__class__.__name__ == "Conv2d"][1:]  # stem left out
    assert len(convs) == 52
    # every conv of the model is in the registry with its count
    from collections import Counter

    seen = Counter((c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs)
    listed = Counter()
    for layer in RESNET50:
        listed[(layer.cin, layer.cout, layer.kernel, layer.stride)] += layer.count
    assert seen == listed


def test_vgg16_registry_counts_its_twelve_3x3_convs_after_the_first():
    assert sum(layer.count for layer in VGG16) == 12
    assert all(layer.kernel == 3 and layer.stride == 1 for layer in VGG16)


def test_weighted_geomean():
    assert weighted_geomean([(2.0, 1), (8.0, 1)]) == pytest.approx(4.0)
    assert weighted_geomean([(2.0, 3), (16.0, 1)]) == pytest.approx(math.exp((3 * math.log(2) + math.log(16)) / 4))
    with pytest.raises(ValueError):
        weighted_geomean([])
