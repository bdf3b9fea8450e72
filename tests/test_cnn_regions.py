"""CNN regions: compress_ runs stages of ResNet residual blocks in (C, H, W, N) with batch-norm folded."""

import copy

import pytest
import torch
from torch import nn

import shflbw
from shflbw.nn.cnn import fold_batchnorm, to_chwn
from shflbw.nn.regions import unfuse_regions_
from shflbw.testing import random_shflbw_mask, rel_error

from conftest import KERNEL_TOLERANCE

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the stem and the head stay dense, as in issue #6's end-to-end ResNet-50
CFG = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("layer*",), exclude=(), time_budget=2)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck, written out (same attributes, same forward): 1x1, 3x3 (stride), 1x1 x4."""

    def __init__(self, cin, width, stride=1):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, written out: two 3x3 convs."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class NoShortcut(BasicBlock):
    """Same attributes as a BasicBlock, but no residual: must not be fused."""

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    def __init__(self, block2=BasicBlock):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Bottleneck(16, 8), Bottleneck(32, 8))
        self.layer2 = nn.Sequential(block2(32, 48, stride=2), block2(48, 48))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _trained_stats(model: nn.Module) -> nn.Module:
    # batch-norm with non-trivial running statistics and affine parameters, so folding matters
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def _masked(block2=BasicBlock, seed=0):
    torch.manual_seed(seed)
    return shflbw.sparsify_(_trained_stats(TinyResNet(block2)), CFG, progress=False)


def test_fold_batchnorm_equals_conv_then_bn():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 5, 3, 3, generator=g)
    mask, perm = random_shflbw_mask(24, 45, 16, 0.4, generator=g)
    conv = shflbw.ShflBWConv2d(shflbw.ShflBWMatrix.from_dense(w, mask.view(24, 5, 3, 3), perm, vector=16),
                               torch.randn(24, generator=g), (2, 1), (1, 1), (1, 1))
    bn = _trained_stats(nn.Sequential(nn.BatchNorm2d(24)))[0]
    x = torch.randn(2, 5, 9, 8, generator=g)
    folded = fold_batchnorm(conv, bn)
    with torch.no_grad():
        assert rel_error(folded(x), bn(conv(x))) < 1e-5
    assert torch.equal(folded.col_idx, conv.col_idx) and torch.equal(folded.perm, conv.perm)
    with pytest.raises(ValueError, match="channels"):
        fold_batchnorm(conv, nn.BatchNorm2d(23))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_resnet_stages_fused_and_equal_to_the_masked_model(backend, nan_poison):
    if backend == "triton":
        pytest.importorskip("triton")
    masked = _masked()
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        ref = masked(x)
    model = shflbw.compress_(copy.deepcopy(masked)).to(DEVICE)
    assert isinstance(model.layer1, shflbw.ShflBWResidualStage) and isinstance(model.layer2, shflbw.ShflBWResidualStage)
    assert isinstance(model.conv1, nn.Conv2d)  # the stem stays dense
    assert "batch-norm folded" in repr(model.layer1)
    with torch.no_grad(), shflbw.ops.backend(backend):
        out = model(x.to(DEVICE)).cpu()
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]


def test_consecutive_stages_convert_once():
    model = shflbw.compress_(_masked())
    with torch.no_grad():
        h = model.layer1(model.relu(model.bn1(model.conv1(torch.randn(2, 3, 8, 8)))))
    assert h.shape == (2, 32, 8, 8)
    assert to_chwn(h).data_ptr() == h.data_ptr()  # the next stage reads the CHWN storage as it is
    assert not to_chwn(h.contiguous()).data_ptr() == h.data_ptr()


def test_training_mode_runs_the_original_layers():
    masked = _masked()
    model = shflbw.compress_(copy.deepcopy(masked))
    masked.train()
    model.train()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert rel_error(model(x), masked(x)) < 1e-5  # batch statistics, not the folded running ones


def test_a_block_with_another_forward_is_left_per_layer():
    masked = _masked(block2=NoShortcut)
    with pytest.warns(UserWarning, match="layer2: looks like a stage of residual blocks"):
        model = shflbw.compress_(copy.deepcopy(masked))
    assert isinstance(model.layer1, shflbw.ShflBWResidualStage)
    assert isinstance(model.layer2, nn.Sequential) and isinstance(model.layer2[0].conv1, shflbw.ShflBWConv2d)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert rel_error(model(x), masked(x)) < 1e-5


def test_unfuse_decompress_and_save_load(tmp_path):
    masked = _masked()
    model = shflbw.compress_(copy.deepcopy(masked))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    shflbw.save(model, str(tmp_path / "m"))
    assert isinstance(model.layer1, shflbw.ShflBWResidualStage)  # fused again after the write
    loaded = shflbw.load(str(tmp_path / "m"), TinyResNet()).eval()
    assert isinstance(loaded.layer1, shflbw.ShflBWResidualStage)
    with torch.no_grad():
        assert rel_error(loaded(x), ref) < 1e-6
    assert unfuse_regions_(model) == 2
    assert isinstance(model.layer1[0].conv1, shflbw.ShflBWConv2d) and isinstance(model.layer1[0].bn1, nn.BatchNorm2d)
    back = shflbw.decompress_(model)
    with torch.no_grad():
        assert rel_error(back(x), masked(x)) < 1e-6


class TinyVGG(nn.Module):
    """VGG-shaped: a plain nn.Sequential of convs, batch-norm, ReLU and max-pools, then a classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),  # the stem, left dense
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _masked_vgg():
    torch.manual_seed(0)
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("features.*",), exclude=("features.0",),
                              time_budget=2)
    return shflbw.sparsify_(_trained_stats(TinyVGG()), cfg, progress=False)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_vgg_chain_fused_and_equal_to_the_masked_model(backend, nan_poison):
    if backend == "triton":
        pytest.importorskip("triton")
    masked = _masked_vgg()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = masked(x)
    model = shflbw.compress_(copy.deepcopy(masked)).to(DEVICE)
    f = model.features
    assert isinstance(f[0], nn.Conv2d) and isinstance(f[2], shflbw.ShflBWConvChain)
    assert all(isinstance(f[i], nn.Identity) for i in range(3, 11))  # the run ends at its last conv's ReLU
    assert isinstance(f[11], nn.MaxPool2d)
    assert "3 convs, 2 max-pools" in repr(f[2])
    with torch.no_grad(), shflbw.ops.backend(backend):
        out = model(x.to(DEVICE)).cpu()
    assert rel_error(out, ref) < KERNEL_TOLERANCE[torch.float32]


def test_vgg_chain_training_mode_unfuse_and_save_load(tmp_path):
    masked = _masked_vgg()
    model = shflbw.compress_(copy.deepcopy(masked))
    x = torch.randn(2, 3, 16, 16)
    masked.train()
    model.train()
    with torch.no_grad():
        assert rel_error(model(x), masked(x)) < 1e-5  # batch statistics through the original modules
    masked.eval()
    model.eval()
    with torch.no_grad():
        ref = masked(x)
    shflbw.save(model, str(tmp_path / "vgg"))
    loaded = shflbw.load(str(tmp_path / "vgg"), TinyVGG()).eval()
    assert isinstance(loaded.features[2], shflbw.ShflBWConvChain)
    with torch.no_grad():
        assert rel_error(loaded(x), ref) < 1e-5
    assert unfuse_regions_(model) == 1
    assert isinstance(model.features[2], shflbw.ShflBWConv2d) and isinstance(model.features[3], nn.BatchNorm2d)
    with torch.no_grad():
        assert rel_error(shflbw.decompress_(model)(x), ref) < 1e-5


def test_a_single_conv_is_no_chain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 3))
    cfg = shflbw.ShflBWConfig(sparsity=0.75, vector=16, include=("3",), exclude=(), time_budget=2)
    model = shflbw.compress_(shflbw.sparsify_(model, cfg, progress=False))
    assert isinstance(model[3], shflbw.ShflBWConv2d) and isinstance(model[0], nn.Conv2d)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.MaxPool2d(2, 1, dilation=2)], ids=["2", "3s2p1", "ceil", "dilated"])
def test_max_pool_on_chwn(pool):
    from shflbw.nn.cnn import max_pool_chwn

    x = torch.randn(3, 5, 9, 11)
    y = max_pool_chwn(x.permute(1, 2, 3, 0).contiguous(), pool)
    assert y.is_contiguous() and torch.equal(y, pool(x).permute(1, 2, 3, 0))
