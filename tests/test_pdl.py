"""Programmatic dependent launch (kernels/pdl.py): when it is on, and that results do not change."""

import pytest
import torch

from shflbw.kernels.pdl import pdl_enabled, pdl_launch


def test_pdl_is_off_on_the_cpu_and_when_the_environment_says_so(monkeypatch):
    cpu = torch.device("cpu")
    assert not pdl_enabled(cpu) and pdl_launch(cpu) == {"PDL": False}
    monkeypatch.setenv("SHFLBW_PDL", "0")
    assert not pdl_enabled(torch.device("cuda", 0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_chained_kernels_with_pdl_match_pdl_off(monkeypatch):
    # a chain of dependent launches (transpose -> SpMM -> add + LayerNorm -> transpose), each
    # reading what the one before wrote, gives the same bits with PDL on (Hopper) as with it off
    from shflbw import ShflBWMatrix
    from shflbw.kernels.addnorm import add_layernorm_fm
    from shflbw.kernels.spmm import spmm_fwd
    from shflbw.kernels.transpose import transpose
    from shflbw.testing import random_shflbw_mask

    g = torch.Generator().manual_seed(0)
    w = torch.randn(512, 256, generator=g)
    mask, perm = random_shflbw_mask(512, 256, 64, 0.25, generator=g)
    p = ShflBWMatrix.from_dense(w, mask, perm, vector=64).to("cuda", torch.bfloat16)
    x = torch.randn(4096, 256, generator=g).to("cuda", torch.bfloat16)
    lw, lb = torch.randn(512, device="cuda"), torch.randn(512, device="cuda")

    def chain():
        h = spmm_fwd(p.values, p.col_idx, p.group_ptr, p.perm, transpose(x), 512)
        return transpose(add_layernorm_fm(h, h, lw, lb, 1e-5))

    on = [chain() for _ in range(3)]
    monkeypatch.setenv("SHFLBW_PDL", "0")
    off = chain()
    assert all(torch.equal(o, off) for o in on)
    assert torch.isfinite(off).all()
