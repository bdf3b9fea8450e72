"""Build every tm_mma variant for sm_90 / sm_90a on a machine with no GPU: registers, spills, errors.

    pip download --no-deps -d /tmp/nvrtc nvidia-cuda-nvrtc-cu12 && \
        python -m zipfile -e /tmp/nvrtc/*.whl /tmp/nvrtc_pkg
    python prototype/cuda_offline_check.py --nvrtc /tmp/nvrtc_pkg/nvidia/cuda_nvrtc/lib/libnvrtc.so.12

Why: device time is scarce (sessions 17 and 18 got no machine at all), so a kernel that does not
build, or spills, should be found here. NVRTC compiles CUDA C++ to PTX without a GPU, and the
ptxas that Triton's wheel carries assembles the PTX for sm_90 / sm_90a and prints its resource use.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tm_build  # noqa: E402
import tm_mma  # noqa: E402


def nvrtc_ptx(lib: ctypes.CDLL, source: str, options: list[str]) -> str:
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"k.cu", 0, None, None) != 0:
        raise RuntimeError("nvrtcCreateProgram failed")
    opts = [o.encode() for o in options]
    res = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if res != 0:
        raise RuntimeError(log.value.decode())
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    return ptx.value.decode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvrtc", required=True, help="path to libnvrtc.so (from the nvidia-cuda-nvrtc wheel)")
    args = ap.parse_args()
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    lib = ctypes.CDLL(args.nvrtc)
    failed = 0
    import tm_mlp

    permute = (tm_build._HERE / "tm_permute.cu").read_text()
    builds = [("tm_permute", "90", permute, []), ("tm_permute finish", "90", permute, ["-DFINISH"]),
              ("tm_permute finish fp16", "90", permute, ["-DFINISH", "-DHALF"])]
    for v in tm_mma.VARIANTS + [v for pair in tm_mlp.PAIRS for v in pair]:
        arch = "90a" if v.kind == "cluster" else "90"
        builds.append((f"{v.name} {v.dtype}", arch, tm_build.SOURCES[v.kind][0], tm_build.build_options(v)))
    for name, arch, source, options in builds:
        options = [f"--gpu-architecture=compute_{arch}"] + options
        try:
            ptx = nvrtc_ptx(lib, source, options)
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "k.ptx")
                with open(path, "w") as f:
                    f.write(ptx)
                r = subprocess.run([ptxas, f"-arch=sm_{arch}", "-v", path, "-o", os.path.join(d, "k.cubin")],
                                   capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            info = " ".join(line.split("info    :")[-1].strip() for line in r.stderr.splitlines()
                            if "registers" in line or "spill" in line)
            print(f"{name}: {info}")
        except RuntimeError as e:
            failed += 1
            print(f"{name}: FAILED\n{e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
