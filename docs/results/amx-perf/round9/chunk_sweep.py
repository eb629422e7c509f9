"""keep_draws with MASK_CHUNK from 2,048 to 32,768 draws (the kernel as built, then numpy's path), call by call in
turn in one process: the bench's masks (524,288, 1,048,576) and a small one (65,536: 8 streams of 8,192 fill one
vector group, 4 of 16,384 take the scalar chain). Medians of 40 calls (numpy's: 10), ms, one thread. Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/chunk_sweep.py"""

import statistics
import time

import torch

from xmodlm.kernels import dropout, native

torch.set_num_threads(1)
chunks = [1 << k for k in range(11, 16)]
threshold = round(0.1 * 65536) - 32768
print(f"{torch.get_num_threads()} thread(s); keep_draws, ms (median) by MASK_CHUNK:")
print(f"{'':22s}" + "".join(f"{c:>9,d}" for c in chunks))
for kernel, calls in ((True, 40), (False, 10)):
    native._STATE["enabled"] = kernel
    for n in (65_536, 524_288, 1_048_576):
        times = {c: [] for c in chunks}
        for i in range(calls + 2):
            for c in chunks:
                dropout.MASK_CHUNK = c
                start = time.perf_counter()
                dropout.keep_draws(1000 + i, n, threshold)
                if i >= 2:
                    times[c].append(time.perf_counter() - start)
        label = f"{'kernel' if kernel else 'numpy'} n = {n:,d}"
        print(f"{label:22s}" + "".join(f"{statistics.median(times[c]) * 1e3:9.3f}" for c in chunks))
