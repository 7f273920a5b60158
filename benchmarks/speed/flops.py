"""FLOP counting and device peaks for the speed benchmarks' "achieved TFLOP/s, % of peak".

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one real training
step (matmuls, attention and convolutions; elementwise work is not counted), so they are
the FLOPs the step *executes*, padding included. The benchmarks print them per path: a
path that removes padding does fewer FLOPs for the same batch, and the "useful" rate is
the leanest path's FLOPs over each path's step time.
"""
from __future__ import annotations

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets.
# Matched in order against torch.cuda.get_device_name(), so the more specific names first.
DENSE_BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),     # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4),     # SXM; same tensor cores as H100 SXM, more and faster memory
    ("A100", 312.0),
)


def dense_bf16_peak(device_name: str) -> float | None:
    """TFLOP/s, or None for a device not in the table (CPUs included)."""
    for key, peak in DENSE_BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def utilisation(flops: float, seconds: float, device_name: str) -> tuple[str, str]:
    """("achieved TFLOP/s", "% of the device's dense bf16 peak" or "n/a")."""
    tflops = flops / seconds / 1e12
    peak = dense_bf16_peak(device_name)
    return f"{tflops:.3g}", (f"{100 * tflops / peak:.1f}%" if peak else "n/a")


def count_flops(step) -> int:
    """FLOPs executed by ``step()`` (forward and backward, if it runs one)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())
