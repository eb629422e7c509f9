"""The own AMX product kernel (native.segments_linear, rows split between the threads, bias, no activation) alone at
several row counts and sum lengths K, warm: where it runs near the ceiling and where not.
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round7/products_by_k.py"""

import torch
from timing import median_time  # this folder's helper (the script's own folder is on the path)

from xmodlm.kernels import native

torch.manual_seed(0)


print(f"{torch.get_num_threads()} threads; rows x K -> N: median ms, GFLOP/s")
for rows, k, n in [(1024, 256, 3072), (1024, 768, 3072), (1024, 1536, 3072), (1024, 3072, 768), (1024, 768, 768),
                   (128, 768, 384), (128, 384, 768), (512, 768, 384)]:
    x = torch.randn(rows, k).bfloat16()
    w, b = native.pack((0.05 * torch.randn(n, k)).bfloat16()), torch.randn(n)
    seconds = median_time(lambda: native.segments_linear(x, (rows,), (w,), (b,), n, None, None, True, None), 30)
    print(f"{rows} x {k} -> {n}: {seconds * 1e3:.3f} ms, {2 * rows * k * n / seconds / 1e9:.0f} GFLOP/s")
