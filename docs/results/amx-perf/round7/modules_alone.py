"""The language modules' own kernel (native.modules) alone at the bench's inference shape (8 segments of 128 rows,
d 768, r 384, residual and norm in the call): warm (one layer's weights, called again and again) against cold (12
layers' weights in turn, as in the forward, 113 MB), against the products' work at the ceiling and the weights'
bytes at the machine's copy rate. Usage: PYTHONPATH=src python3 docs/results/amx-perf/round7/modules_alone.py"""

import statistics
import time

import torch

from xmodlm.kernels import native
from xmodlm.recipes.bench import matmul_ceiling

torch.manual_seed(0)
d, r, segments, rows, layers = 768, 384, 8, 128, 12
x = torch.randn(segments * rows, d).bfloat16()
residual = torch.randn(segments * rows, d).bfloat16()


def layer():
    first = [(native.pack((0.05 * torch.randn(r, d)).bfloat16()), torch.randn(r)) for _ in range(segments)]
    second = [(native.pack((0.05 * torch.randn(d, r)).bfloat16()), torch.randn(d)) for _ in range(segments)]
    return first, second


weights = [layer() for _ in range(layers)]
counts = [rows] * segments


def run(i):
    first, second = weights[i]
    return native.modules(x, counts, first, second, residual)


def timed(order, reps=10):
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        for i in order:
            run(i)
        out.append((time.perf_counter() - start) / len(order))
    return statistics.median(out)


flops = 2 * 2 * segments * rows * d * r
big, target = torch.ones(128 * 2**20 // 4), torch.zeros(128 * 2**20 // 4)  # both touched: no page faults timed
copy_rates = []
for _ in range(5):
    start = time.perf_counter(); target.copy_(big); copy_rates.append(2 * big.numel() * 4 / (time.perf_counter() - start))
rate = statistics.median(copy_rates)
ceiling = max(matmul_ceiling(torch.bfloat16).values())
print(f"{torch.get_num_threads()} threads; ceiling {ceiling / 1e9:.0f} GFLOP/s; copy of 128 MB at {rate / 1e9:.1f} GB/s")
for round_ in range(3):
    warm = timed([0] * layers)
    cold = timed(list(range(layers)))
    bytes_ = 2 * segments * 2 * d * r
    print(f"round {round_ + 1}: warm {warm * 1e3:.3f} ms ({flops / warm / 1e9:.0f} GFLOP/s), cold {cold * 1e3:.3f} ms "
          f"({flops / cold / 1e9:.0f} GFLOP/s); at the ceiling {flops / ceiling * 1e3:.3f} ms, the weights "
          f"({bytes_ / 2**20:.1f} MB) at the copy rate {bytes_ / rate * 1e3:.3f} ms")
