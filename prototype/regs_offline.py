"""Experiment: registers and spills of our Triton kernels for sm_90a, offline (no GPU needed).

    pip download triton==3.6.0 --no-deps -d /tmp/t36dl && python -m zipfile -e /tmp/t36dl/triton-3.6.0-*.whl /tmp/t36site
    chmod +x /tmp/t36site/triton/backends/nvidia/bin/*
    PYTHONPATH=/tmp/t36site python prototype/regs_offline.py

Compiles each kernel variant with triton 3.6 (the GPU machine's version) for sm_90a and runs the
wheel's ptxas -v on the PTX. No divisibility hints are passed (the JIT adds them for 16-aligned
arguments), so absolute counts may differ from what runs; the comparison between variants of one
kernel is what this is for (session 9: the deferred LayerNorm's epilogues). The decode kernels at
the end (session 13) pass the JIT's 16-byte divisibility hints for their pointers, and also count
the async copies in the TTGIR: whether the compiler software-pipelined the K loop.
"""
import os
import subprocess
import sys

sys.path.insert(0, "/tmp/t36site")  # triton 3.6 before any installed one
import triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
from shflbw.kernels.addnorm import add_layernorm_fm_kernel
from shflbw.kernels.decode import linear_decode_fwd_kernel
from shflbw.kernels.decode_streamk import linear_decode_streamk_kernel
from shflbw.kernels.spmm import spmm_fwd_kernel
PTXAS = "/tmp/t36site/triton/backends/nvidia/bin/ptxas"
target = GPUTarget("cuda", 90, 32)

def regs(fn, sig, consts, warps, stages, name, attrs=None):
    src = ASTSource(fn, signature=sig, constexprs=consts, attrs=attrs or {})
    k = triton.compile(src, target=target, options={"num_warps": warps, "num_stages": stages})
    os.makedirs("/tmp/ptx", exist_ok=True)
    open("/tmp/ptx/k.ptx", "w").write(k.asm["ptx"])
    out = subprocess.run([PTXAS, "-arch=sm_90a", "-v", "/tmp/ptx/k.ptx", "-o", "/tmp/ptx/k.cubin"], capture_output=True, text=True)
    lines = [l.strip() for l in (out.stdout + out.stderr).splitlines() if "registers" in l or "spill" in l]
    copies = k.asm["ttgir"].count("async_copy_global_to_local")
    print(name, "|", " ; ".join(lines), f"| async copies {copies}, shared {k.metadata.shared} B")

ln_sig = {n: t for n, t in [("h_ptr", "*bf16"), ("r_ptr", "*bf16"), ("w_ptr", "*bf16"), ("b_ptr", "*bf16"), ("out_ptr", "*bf16"),
          ("F", "i32"), ("T", "i32"), ("shf", "i32"), ("sht", "i32"), ("srf", "i32"), ("srt", "i32"), ("eps", "fp32"),
          ("rstats_ptr", "*fp32"), ("rw_ptr", "*bf16"), ("rb_ptr", "*bf16"), ("r_eps", "fp32")]}
for norm in (False, True):
    for bt, w in ((32, 8), (16, 4), (16, 8), (8, 4)):
        sig = dict(ln_sig, BF="constexpr", BT="constexpr", HAS_RES="constexpr", ONE_PASS="constexpr", STAGES="constexpr", NORM_RES="constexpr")
        regs(add_layernorm_fm_kernel, sig, {"BF": 1024, "BT": bt, "HAS_RES": True, "ONE_PASS": True, "STAGES": 1, "NORM_RES": norm}, w, 1,
             f"addnorm one-pass BT{bt} w{w} NORM_RES={norm}")

sp_sig = {n: t for n, t in [("vals_ptr", "*bf16"), ("cols_ptr", "*i32"), ("gptr_ptr", "*i32"), ("perm_ptr", "*i32"), ("b_ptr", "*bf16"),
          ("bias_ptr", "*bf16"), ("res_ptr", "*bf16"), ("out_ptr", "*bf16"), ("stats_ptr", "*fp32"), ("lnc_ptr", "*fp32"),
          ("M", "i32"), ("N", "i32"), ("stride_bk", "i32"), ("stride_bn", "i32"), ("stride_om", "i32"), ("stride_on", "i32"),
          ("SPLITS", "i32"), ("n_features", "i32"), ("eps", "fp32")]}
cn = ["V", "BN", "BK", "HAS_BIAS", "HAS_RESIDUAL", "ACTIVATION", "PERMUTE_OUT", "DOT_PRECISION", "UPCAST", "ATOMIC", "EVEN_N", "IDX64", "NORM_IN", "STATS_OUT"]
base = dict(V=64, BN=128, BK=32, HAS_BIAS=True, HAS_RESIDUAL=False, ACTIVATION=3, PERMUTE_OUT=False, DOT_PRECISION="tf32", UPCAST=False,
            ATOMIC=False, EVEN_N=True, IDX64=False, NORM_IN=False, STATS_OUT=False)
sig = dict(sp_sig, **{c: "constexpr" for c in cn})
regs(spmm_fwd_kernel, sig, base, 4, 5, "fc1 plain")
regs(spmm_fwd_kernel, sig, dict(base, NORM_IN=True), 4, 5, "fc1 NORM_IN")
# session 10: 8 warps take fc1's norm epilogue from 255 registers + 32 B of spills (4 warps) to 130
# and no spill (plain fc1: 220 -> 128); BK 64 / 8 warps / 4 stages 178. Not timed on a GPU yet.
regs(spmm_fwd_kernel, sig, base, 8, 5, "fc1 plain w8")
regs(spmm_fwd_kernel, sig, dict(base, NORM_IN=True), 8, 5, "fc1 NORM_IN w8")
regs(spmm_fwd_kernel, sig, dict(base, NORM_IN=True, BK=64), 8, 4, "fc1 NORM_IN BK64 w8 s4")
op = dict(base, ACTIVATION=0, PERMUTE_OUT=True, HAS_RESIDUAL=True)
regs(spmm_fwd_kernel, sig, op, 4, 5, "outproj+res")
regs(spmm_fwd_kernel, sig, dict(op, STATS_OUT=True), 4, 5, "outproj+res STATS_OUT")

# Session 13: the decode kernels. Split-K at T = 1: 120 registers, no async copies (a loop without a
# dot); at T = 16: 72 registers, 5 async copies. Stream-K as first measured (one loop, flush in a
# branch): 128 registers at T = 1; at T = 16 no async copies; split into per-group inner loops, 5.
ptrs = ["x_ptr", "vals_ptr", "cols_ptr", "gptr_ptr", "perm_ptr", "bias_ptr", "out_ptr", "part_ptr", "lock_ptr"]
hints = {(i,): [["tt.divisibility", 16]] for i in range(len(ptrs))}
ptr_sig = dict(zip(ptrs, ["*bf16", "*bf16", "*i32", "*i32", "*i32", "*bf16", "*bf16", "*fp32", "*i32"]))
sk_sig = dict(ptr_sig, **{n: "i32" for n in ["T", "G", "M", "P", "stride_xt", "stride_xk"]},
              **{n: "constexpr" for n in ["V", "BT", "BK", "BLOCK_G", "HAS_BIAS", "GEMV", "DOT_PRECISION", "UPCAST"]})
d_sig = dict(ptr_sig, **{n: "i32" for n in ["T", "M", "stride_xt", "stride_xk", "SPLITS"]},
             **{n: "constexpr" for n in ["V", "VS", "BT", "BK", "HAS_BIAS", "REDUCE", "GEMV", "GEMV_STAGES",
                                         "GEMV_PREFETCH", "DOT_PRECISION", "UPCAST"]})
for bt, stages in ((1, 3), (16, 5)):
    common = dict(V=64, BT=bt, BK=128, HAS_BIAS=False, GEMV=bt == 1, DOT_PRECISION="tf32", UPCAST=False)
    regs(linear_decode_fwd_kernel, d_sig, dict(common, VS=64, REDUCE=2, GEMV_STAGES=1, GEMV_PREFETCH=0), 4, stages,
         f"decode split-K T{bt}", hints)
    regs(linear_decode_streamk_kernel, sk_sig, dict(common, BLOCK_G=256), 4, stages, f"decode stream-K T{bt}", hints)
