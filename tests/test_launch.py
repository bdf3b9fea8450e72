"""The cached Triton launcher: its key separates what the JIT specialises on; on a GPU its direct
launches give the JIT's results, for aligned and misaligned operands alike."""

import pytest
import torch

from shflbw.testing import random_problem, rel_error

from conftest import KERNEL_TOLERANCE

pytest.importorskip("triton")

from shflbw.kernels.launch import _spec, fast_launch_enabled  # noqa: E402


def test_key_separates_what_the_jit_specialises_on():
    t = torch.zeros(64, dtype=torch.bfloat16)
    # 16-byte alignment of pointers (a view 1 element in is 2 bytes off), dtype
    assert _spec(t) != _spec(t[1:])
    assert _spec(t) == _spec(t[8:])  # 16 bytes in: still aligned
    assert _spec(t) != _spec(t.float())
    # integers: == 1, divisible by 16, 32- or 64-bit
    assert len({_spec(1), _spec(2), _spec(16), _spec(2**31)}) == 4
    assert _spec(17) == _spec(3) and _spec(32) == _spec(48)
    assert _spec(True) != _spec(1)
    assert _spec(None) is None


def test_interpreter_never_takes_the_direct_path(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    fast_launch_enabled.cache_clear()
    try:
        assert not fast_launch_enabled()
    finally:
        fast_launch_enabled.cache_clear()


def test_env_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("SHFLBW_FAST_LAUNCH", "0")
    fast_launch_enabled.cache_clear()
    try:
        assert not fast_launch_enabled()
    finally:
        fast_launch_enabled.cache_clear()


@pytest.mark.requires_gpu
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "misaligned"])
def test_fast_launch_matches_the_jit(offset, nan_poison):
    from shflbw.kernels.linear import linear_fwd

    if not fast_launch_enabled():
        pytest.skip("this Triton version launches through the JIT only")
    weight, mask, perm, w = random_problem(256, 200, 64, 0.3, torch.bfloat16, seed=9, device="cuda")
    base = torch.randn(130 * 200 + offset, device="cuda").to(torch.bfloat16)
    x = base[offset:].view(130, 200)  # offset 1: a 2-byte misaligned start, a different binary
    args = (w.values, w.col_idx, w.group_ptr, w.perm, None, 256)
    ref = x.double() @ (weight * mask).double().t()
    for path in ("roundtrip", "transpose", "splitk", "decode"):
        first = linear_fwd(x, *args, path=path, splits=2)  # through the JIT: compiles, caches
        again = linear_fwd(x, *args, path=path, splits=2)  # the cached kernel launched directly
        torch.cuda.synchronize()
        assert rel_error(again, ref) < KERNEL_TOLERANCE[torch.bfloat16], path
        if path != "splitk":  # float32 atomics: the sum order may differ between runs
            assert torch.equal(first, again), path
