"""Largest error against attention in float64 (on the same bf16 inputs) of the vector kernel, torch's bf16 SDPA and
bf16_attention: heads of one fused projection, N(0, 1) inputs (12 heads at the model's shapes; 3 x 2 heads of 32 and
128), masked where said; "peaked": inputs of standard deviation 4.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vattn_accuracy.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xmodlm.kernels import native
from xmodlm.kernels.attention import bf16_attention


def main() -> None:
    torch.set_num_threads(1)
    assert native.vector_available() and not native.available()
    print("| B | T | H | D | case | vector kernel | SDPA bf16 | bf16_attention |\n|---:|---:|---:|---:|---|---:|---:|---:|")
    for b, t, h, d, case in [(8, 128, 12, 64, "unmasked"), (8, 128, 12, 64, "masked"), (81, 32, 12, 64, "masked"),
                             (3, 200, 2, 32, "masked"), (3, 37, 2, 128, "masked"), (2, 128, 2, 64, "peaked")]:
        g = torch.Generator().manual_seed(0)
        spread = 4 if case == "peaked" else 1
        q, k, v = (spread * torch.randn(b, t, 3, h, d, generator=g)).bfloat16().permute(2, 0, 3, 1, 4).unbind(0)
        keep = None
        if case == "masked":
            keep = torch.ones(b, t, dtype=torch.bool)
            for row in range(b):
                keep[row, t - (row * 7) % (t // 2):] = False
        mask = None if keep is None else keep[:, None, None, :]
        exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
        outs = (native.attention(q, k, v, keep), F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                bf16_attention(q, k, v, mask))
        print(f"| {b} | {t} | {h} | {d} | {case} | "
              + " | ".join(f"{(o.double() - exact).abs().max().item():.2e}" for o in outs) + " |")


if __name__ == "__main__":
    main()
