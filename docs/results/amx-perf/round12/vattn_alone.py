"""The vector attention kernel (native.attention on a processor without AMX: xm_attention_vector) against
bf16_attention and torch's SDPA (bf16), alone, at the model's shapes: heads of one fused (B, T, 3, H, D)
projection, 12 heads of 64, T 128 and 32, batch 8 and 81, unmasked and with padded keys masked (--extra: the
shapes around them, T 1, 5, 512, heads of 32 and 128). The three run alternating, one call each per round; medians
over the rounds.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vattn_alone.py [--rounds 40] [--extra]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import xmodlm
from xmodlm.kernels import native
from xmodlm.kernels.attention import bf16_attention


def heads(b, t, h, d):
    torch.manual_seed(0)
    return torch.randn(b, t, 3, h, d).bfloat16().permute(2, 0, 3, 1, 4).unbind(0)


def key_mask(b, t):
    """Each example's last keys padded out, as a batch of mixed lengths has them (between t / 2 and t kept)."""
    keep = torch.ones(b, t, dtype=torch.bool)
    for row in range(b):
        keep[row, t - (row * 7) % max(1, t // 2):] = False
    return keep


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--extra", action="store_true", help="the shapes around the model's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    assert native.vector_available() and not native.available()
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds}; ms per call, median (min)")
    shapes = [(8, 128, False, 64), (8, 128, True, 64), (8, 32, False, 64), (81, 32, False, 64), (81, 32, True, 64),
              (81, 128, False, 64)]
    if args.extra:
        shapes = [(8, 1, False, 64), (8, 5, True, 64), (8, 37, True, 64), (8, 128, True, 32), (8, 128, True, 128),
                  (8, 256, True, 64), (8, 512, True, 64)]
    for b, t, masked, d in shapes:
        q, k, v = heads(b, t, 12, d)
        keep = key_mask(b, t) if masked else None
        mask = None if keep is None else keep[:, None, None, :]
        variants = {"vector kernel": lambda: native.attention(q, k, v, keep),
                    "bf16_attention": lambda: bf16_attention(q, k, v, mask),
                    "SDPA bf16": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)}
        times = {name: [] for name in variants}
        with torch.no_grad():
            for fn in variants.values():
                fn(), fn()
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        flops = 2 * 2 * b * 12 * t * t * d
        line = "  ".join(f"{name} {med[name]:.3f} ({min(times[name]) * 1e3:.3f})" for name in variants)
        print(f"B {b:3d} T {t:3d} D {d:3d} {'masked  ' if masked else 'unmasked'}: {line}; vector {flops / med['vector kernel'] / 1e6:.0f} "
              f"GFLOP/s; bf16_attention / vector {med['bf16_attention'] / med['vector kernel']:.2f}x, "
              f"SDPA / vector {med['SDPA bf16'] / med['vector kernel']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
