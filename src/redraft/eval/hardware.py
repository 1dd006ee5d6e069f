"""This machine's ceilings, measured by redraft itself: peak matmul FLOP/s and memory bandwidth.

The roofline compares what a sampler achieves with what the hardware can do; both ceilings
are measured here (not read from a spec sheet), with PyTorch's own kernels and thread count,
so the comparison is like for like. Each figure is the best of a few repetitions: the ceiling
is what the machine can reach, and the best run is the one least disturbed by other work.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_seconds(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 5,
                       device: str = "cpu") -> float:
    """GFLOP/s of an n x n x n matrix product (2 n^3 FLOPs), best of `reps`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run():
        torch.matmul(a, b, out=out)
        if device != "cpu":
            torch.cuda.synchronize()

    return 2 * n**3 / best_seconds(run, reps) / 1e9


def memory_bandwidth_gbs(megabytes: int = 512, reps: int = 5, device: str = "cpu") -> float:
    """GB/s of copying a large buffer (bytes read + bytes written), best of `reps`.

    The buffer is far larger than any cache, so this is main-memory bandwidth as a PyTorch
    kernel sees it: the ceiling of a memory-bound decode step.
    """
    n = megabytes * 2**20 // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)

    def run():
        dst.copy_(src)
        if device != "cpu":
            torch.cuda.synchronize()

    return 2 * n * 4 / best_seconds(run, reps) / 1e9


def measure(quick: bool = False) -> dict[str, float]:
    """The ceilings the roofline needs, fp32 and bf16."""
    n, reps = (1024, 3) if quick else (2048, 5)
    return {
        "peak_matmul_gflops": peak_matmul_gflops(torch.float32, n, reps),
        "peak_matmul_gflops_bf16": peak_matmul_gflops(torch.bfloat16, n, reps),
        "mem_bandwidth_gbs": memory_bandwidth_gbs(128 if quick else 512, reps),
        "threads": torch.get_num_threads(),
    }
