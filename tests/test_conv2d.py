"""shflbw.conv2d (reference path) == F.conv2d on the masked weight; Conv2d packing and bad input."""

import pytest
import torch
import torch.nn.functional as F

import shflbw
from shflbw import ShflBWMatrix
from shflbw.testing import random_shflbw_mask, rel_error

from conftest import KERNEL_TOLERANCE, TOLERANCE

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _conv_problem(cout, cin, r, s, v, density, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(cout, cin, r, s, generator=g).to(dtype)
    mask2d, perm = random_shflbw_mask(cout, cin * r * s, v, density, generator=g)
    mask = mask2d.view(cout, cin, r, s)
    return weight, mask, ShflBWMatrix.from_dense(weight, mask, perm, vector=v)


CASES = [  # (Cout, Cin, R, S, stride, padding, dilation, N, H, W)
    (40, 3, 3, 3, 1, 1, 1, 2, 9, 11),
    (32, 8, 1, 1, 2, 0, 1, 3, 7, 7),
    (20, 5, 3, 3, 1, "same", 2, 1, 8, 6),
    (16, 4, 4, 2, 1, "same", 1, 2, 7, 9),  # even kernels: asymmetric 'same' padding
    (33, 6, 3, 5, (2, 1), (1, 2), (1, 2), 2, 10, 12),
    (16, 4, 3, 3, 1, "valid", 1, 1, 5, 5),
    (24, 8, 1, 1, 1, 0, 1, 3, 5, 6),  # 1x1 stride 1: the feature-major SpMM kernel on the (C, H*W*N) view
]


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv2d_matches_dense(case, dtype, layout, backend, nan_poison):
    # triton: the implicit-GEMM kernel on the batch-innermost layout (the interpreter on CPU)
    if backend == "triton":
        pytest.importorskip("triton")
    cout, cin, r, s, stride, padding, dilation, n, h, w = case
    weight, mask, packed = _conv_problem(cout, cin, r, s, 16, 0.4, dtype, seed=cout)
    x = torch.randn(n, cin, h, w).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(cout).to(dtype)
    x, packed, bias = x.to(DEVICE), packed.to(DEVICE), bias.to(DEVICE)
    with shflbw.ops.backend(backend):
        y = shflbw.conv2d(x, packed, bias, stride=stride, padding=padding, dilation=dilation)
    x, bias, y = x.cpu(), bias.cpu(), y.cpu()
    ref = F.conv2d(x.double(), (weight * mask).double(), bias.double(), stride=stride, padding=padding, dilation=dilation)
    assert y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    assert rel_error(y, ref) < (TOLERANCE if backend == "reference" else KERNEL_TOLERANCE)[dtype]


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("v,n,k,stride,pad", [(16, 5, 3, 2, 1), (32, 64, 3, 2, 1), (16, 4, 1, 1, 0)],
                         ids=["V16-N5", "V32-N64", "1x1-spmm"])
def test_conv2d_chwn_layout_with_relu(backend, v, n, k, stride, pad, nan_poison):
    # batch innermost in and out; N = 64 makes every gathered row one whole run of the batch
    if backend == "triton":
        pytest.importorskip("triton")
    weight, mask, packed = _conv_problem(40, 6, k, k, v, 0.3, seed=n)
    x = torch.randn(n, 6, 6, 5)
    bias = torch.randn(40)
    with shflbw.ops.backend(backend):
        y = shflbw.conv2d_chwn(x.permute(1, 2, 3, 0).contiguous().to(DEVICE), packed.to(DEVICE), bias.to(DEVICE),
                               stride=stride, padding=pad, relu=True).cpu()
    ref = torch.relu(F.conv2d(x.double(), (weight * mask).double(), bias.double(), stride=stride, padding=pad))
    assert y.shape == ref.permute(1, 2, 3, 0).shape and y.is_contiguous()
    assert rel_error(y.permute(3, 0, 1, 2), ref) < KERNEL_TOLERANCE[torch.float32]
    assert bool((y >= 0).all())


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (1, 1, 0), (1, 2, 0)], ids=["3x3", "1x1-spmm", "1x1-s2"])
def test_conv2d_chwn_residual_before_relu(backend, k, stride, pad, nan_poison):
    # a residual block's tail: relu(conv(x) + bias + shortcut), the shortcut added in the epilogue
    if backend == "triton":
        pytest.importorskip("triton")
    weight, mask, packed = _conv_problem(32, 6, k, k, 16, 0.4, seed=k + stride)
    x = torch.randn(4, 6, 7, 7)
    bias = torch.randn(32)
    ref = F.conv2d(x.double(), (weight * mask).double(), bias.double(), stride=stride, padding=pad)
    shortcut = torch.randn(ref.shape)
    ref = torch.relu(ref + shortcut.double())
    with shflbw.ops.backend(backend):
        y = shflbw.conv2d_chwn(x.permute(1, 2, 3, 0).contiguous().to(DEVICE), packed.to(DEVICE), bias.to(DEVICE),
                               stride=stride, padding=pad, relu=True,
                               residual=shortcut.permute(1, 2, 3, 0).contiguous().to(DEVICE)).cpu()
    assert rel_error(y.permute(3, 0, 1, 2), ref) < KERNEL_TOLERANCE[torch.float32]
    with pytest.raises(ValueError, match="residual must be a tensor of shape"):
        shflbw.conv2d_chwn(x.permute(1, 2, 3, 0).contiguous().to(DEVICE), packed.to(DEVICE), stride=stride, padding=pad,
                           residual=torch.zeros(1, 2, 3, 4, device=DEVICE))


def test_conv2d_chwn_rejects_asymmetric_same():
    weight, mask, packed = _conv_problem(16, 4, 4, 2, 16, 0.5)
    with pytest.raises(ValueError, match="symmetric"):
        shflbw.conv2d_chwn(torch.randn(4, 7, 9, 2), packed, padding="same")
    with pytest.raises(ValueError, match="channels"):
        shflbw.conv2d_chwn(torch.randn(3, 7, 9, 2), packed)


def test_conv_round_trip_and_save(tmp_path):
    weight, mask, packed = _conv_problem(24, 4, 3, 3, 16, 0.5)
    assert packed.kernel == (4, 3, 3) and packed.shape == (24, 36)
    assert torch.equal(packed.to_dense(), weight * mask)
    packed.save(str(tmp_path / "c.safetensors"))
    back = ShflBWMatrix.load(str(tmp_path / "c.safetensors"))
    assert back.kernel == (4, 3, 3) and torch.equal(back.to_dense(), weight * mask)


def test_opcheck_and_compile():
    weight, mask, packed = _conv_problem(16, 3, 3, 3, 16, 0.5)
    x = torch.randn(2, 3, 6, 6)
    args = (x, packed.values, packed.col_idx, packed.group_ptr, packed.perm, None, 16, [3, 3, 3], [1, 1], [1, 1], [1, 1])
    torch.library.opcheck(torch.ops.shflbw.conv2d, args)
    torch.library.opcheck(torch.ops.shflbw.conv2d, (x.contiguous(memory_format=torch.channels_last), *args[1:]))
    f = torch.compile(lambda a: torch.relu(shflbw.conv2d(a, packed, padding=1)), fullgraph=True, backend="aot_eager")
    assert rel_error(f(x), torch.relu(F.conv2d(x, weight * mask, padding=1))) < 1e-5
    xc = x.permute(1, 2, 3, 0).contiguous()
    torch.library.opcheck(torch.ops.shflbw.conv2d_chwn, (xc, *args[1:], True))
    g = torch.compile(lambda a: shflbw.conv2d_chwn(a, packed, padding=1, relu=True), fullgraph=True, backend="aot_eager")
    assert rel_error(g(xc).permute(3, 0, 1, 2), torch.relu(F.conv2d(x, weight * mask, padding=1))) < 1e-5


def test_bad_arguments():
    weight, mask, packed = _conv_problem(16, 3, 3, 3, 16, 0.5)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="groups=1"):
        shflbw.conv2d(x, packed, groups=3)
    with pytest.raises(ValueError, match="channels"):
        shflbw.conv2d(torch.randn(1, 4, 8, 8), packed)
    with pytest.raises(TypeError, match="dtype"):
        shflbw.conv2d(x.double(), packed)
    with pytest.raises(ValueError, match="stride 1"):
        shflbw.conv2d(x, packed, stride=2, padding="same")
    with pytest.raises(ValueError, match="pair of ints"):
        shflbw.conv2d(x, packed, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="4-D"):
        shflbw.conv2d(torch.randn(3, 8, 8), packed)
    plain = ShflBWMatrix.from_dense(torch.randn(16, 27), torch.ones(16, 27, dtype=torch.bool), vector=16)
    with pytest.raises(ValueError, match="not packed from a 4-D Conv2d weight"):
        shflbw.conv2d(x, plain)
    with pytest.raises(ValueError, match="multiply to K"):
        ShflBWMatrix(plain.shape, 16, plain.perm, plain.group_ptr, plain.col_idx, plain.values, kernel=(3, 3, 2))


@pytest.mark.parametrize("case", [
    # (Cout, Cin, R, S, stride, padding, dilation, N, H, W): tiles across pixel edges, interior
    # tiles (no bounds checks) next to border tiles, a group tail shorter than one [BK] step
    (24, 5, 3, 3, (1, 2), (1, 0), (2, 1), 8, 7, 6),
    (32, 7, 3, 3, 1, 1, 1, 4, 10, 9),
    (16, 12, 1, 1, 1, 0, 1, 8, 5, 5),
], ids=["dilated", "3x3-interior", "1x1"])
def test_conv_kernel_configs(case, nan_poison):
    # the kernel's launch options all compute the same convolution
    pytest.importorskip("triton")
    from shflbw.kernels.conv2d import ConvConfig, conv2d_chwn as kernel

    cout, cin, r, s, stride, padding, dilation, n, h, w = case
    weight, mask, packed = _conv_problem(cout, cin, r, s, 16, 0.4, seed=cout)
    x = torch.randn(n, cin, h, w)
    packed = packed.to(DEVICE)
    ref = F.conv2d(x.double(), (weight * mask).double(), stride=stride, padding=padding, dilation=dilation)
    pair = torch.nn.modules.utils._pair
    for cfg in (ConvConfig(16, 16, 4, 1), ConvConfig(32, 16, 4, 2), ConvConfig(64, 32, 4, 1)):
        y = kernel(x.permute(1, 2, 3, 0).contiguous().to(DEVICE), packed.values, packed.col_idx, packed.group_ptr,
                   packed.perm, None, cout, (cin, r, s), pair(stride), pair(padding), pair(dilation), config=cfg).cpu()
        assert rel_error(y.permute(3, 0, 1, 2), ref) < KERNEL_TOLERANCE[torch.float32], cfg


def test_conv_config_rule():
    # BN 64 only for windows larger than 1x1 on grids too small to fill the GPU at BN 128
    from shflbw.kernels.configs import CONV_BN64_PROGRAMS_PER_SM, conv_config

    small = 7 * 7 * 64  # ResNet-50's last stage at batch 64: 25 tiles of 128 positions
    assert conv_config(9, 8, small, 132).block_n == 64
    assert conv_config(1, 8, small, 132).block_n == 128
    assert conv_config(9, 8, small, None).block_n == 128  # the interpreter: no SM count
    big = 56 * 56 * 64
    assert 1 * (big // 128) >= CONV_BN64_PROGRAMS_PER_SM * 132
    assert conv_config(9, 1, big, 132).block_n == 128


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
def test_layout_copies_to_and_from_chwn(layout, nan_poison):
    # the tile transpose (channels or pixels against the batch), with tails past every tile edge
    pytest.importorskip("triton")
    from shflbw.kernels.layout import from_chwn, to_chwn

    x = torch.randn(67, 5, 9, 15)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":  # H and W not mergeable: PyTorch's copy
        x = torch.randn(67, 5, 9, 30)[..., ::2]
    y = to_chwn(x.to(DEVICE)).cpu()
    assert y.is_contiguous() and torch.equal(y, x.permute(1, 2, 3, 0))
    for fmt in (torch.contiguous_format, torch.channels_last):
        back = from_chwn(y.to(DEVICE), fmt).cpu()
        assert back.is_contiguous(memory_format=fmt) and torch.equal(back, x)


def test_to_chwn_op_registration():
    x = torch.randn(3, 4, 5, 6)
    torch.library.opcheck(torch.ops.shflbw.to_chwn.default, (x,))
    g = torch.compile(lambda a: torch.ops.shflbw.to_chwn(a) * 2, fullgraph=True, backend="aot_eager")
    assert torch.equal(g(x), x.permute(1, 2, 3, 0) * 2)
