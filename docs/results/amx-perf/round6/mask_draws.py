"""Dropout keep masks at the training bench's sizes (16 x 128 x 256 hidden, 16 x 4 x 128 x 128 attention): the
previous single numpy SFC64 stream, the chunked streams in numpy (the path without the own kernels) and in the own
kernel, alternating, medians of 30. Usage: PYTHONPATH=src python3 docs/results/amx-perf/round6/mask_draws.py"""

import statistics
import subprocess
import time

import numpy as np
import torch

from xmodlm.kernels import dropout as kernel_dropout, native

THRESHOLD = round(0.1 * 65536) - 32768


def single_stream(seed, n):  # the mask before this change: one SFC64(seed) stream
    draws = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n]
    return torch.from_numpy(draws >= THRESHOLD).view(torch.uint8)


class NoKernel:
    @staticmethod
    def available():
        return False


def chunked_numpy(seed, n):
    kernel_dropout.native = NoKernel
    try:
        return kernel_dropout.keep_draws(seed, n, THRESHOLD)
    finally:
        kernel_dropout.native = native


def chunked_kernel(seed, n):
    return kernel_dropout.keep_draws(seed, n, THRESHOLD)


def main():
    cpu = [line for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
           if line.startswith("Model name")]
    print(cpu[0] if cpu else "cpu unknown", f"| {torch.get_num_threads()} thread(s) | kernel: {native.reason()}")
    ways = {"single numpy stream (before)": single_stream, "chunked, numpy": chunked_numpy}
    if native.available():
        ways["chunked, own kernel"] = chunked_kernel
    for n in (16 * 128 * 256, 16 * 4 * 128 * 128):
        times = {name: [] for name in ways}
        for i in range(33):
            for name, fn in ways.items():
                start = time.perf_counter()
                fn(i, n)
                if i >= 3:
                    times[name].append(time.perf_counter() - start)
        base = statistics.median(times["single numpy stream (before)"])
        for name, t in times.items():
            print(f"{n:>9,} draws | {name:<28} | {1e3 * statistics.median(t):.3f} ms | {base / statistics.median(t):.2f}x")


if __name__ == "__main__":
    main()
