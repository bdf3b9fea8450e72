"""``shflbw env``: versions, GPU and Triton availability, for bug reports."""

from __future__ import annotations

import platform
import sys


def env_report() -> str:
    import torch

    import shflbw

    lines = [
        f"{'shflbw:':<13}{shflbw.__version__}",
        f"{'python:':<13}{sys.version.split()[0]} ({platform.platform()})",
        f"{'torch:':<13}{torch.__version__}",
    ]
    try:
        import triton

        lines.append(f"{'triton:':<13}{triton.__version__}")
    except Exception as e:  # triton is optional on CPU-only machines
        lines.append(f"{'triton:':<13}not available ({type(e).__name__})")
    for name in ("numpy", "safetensors"):
        try:
            mod = __import__(name)
            lines.append(f"{name + ':':<13}{mod.__version__}")
        except Exception:
            lines.append(f"{name + ':':<13}not installed")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(
                f"{f'gpu {i}:':<13}{p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                f"{p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
            )
    else:
        lines.append(f"{'gpu:':<13}none (ops run on the pure-PyTorch reference path)")
    return "\n".join(lines)
