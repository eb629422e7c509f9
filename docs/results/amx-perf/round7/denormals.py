"""Inputs whose exponentials fall below float32's normal range: the GELU epilogue of the own product kernel on
pre-activations shifted by a bias (1,024 x 768 -> 3,072), and the attention kernels (inference, training forward and
backward; 8 x 12 heads x 128 x 64) on q and k of growing scale (scores of standard deviation scale^2). Run it on two
trees to compare (the denormal fix in round 7):

    PYTHONPATH=/path/to/old/src python3 docs/results/amx-perf/round7/denormals.py
    PYTHONPATH=src python3 docs/results/amx-perf/round7/denormals.py"""

import torch
from timing import median_time  # this folder's helper (the script's own folder is on the path)

from xmodlm.kernels import native

torch.manual_seed(0)


def ms(f):
    return 1e3 * median_time(f)


rows, k, n = 1024, 768, 3072
x = torch.randn(rows, k).bfloat16()
w = native.pack((0.05 * torch.randn(n, k)).bfloat16())
for shift in (0.0, -8.0, -14.0, -20.0, -40.0):
    b = torch.full((n,), shift)
    gelu = ms(lambda: native.segments_linear(x, (rows,), (w,), (b,), n, "gelu", None, True, None))
    plain = ms(lambda: native.segments_linear(x, (rows,), (w,), (b,), n, None, None, True, None))
    print(f"product + bias {shift:+.0f}: with GELU {gelu:.2f} ms, without {plain:.2f} ms")
for scale in (1.0, 2.0, 3.0, 4.0):
    qkv = (scale * torch.randn(8, 128, 3, 12, 64)).bfloat16()
    q, k_, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out, stats = native.training_attention(q, k_, v, None, None, 1.0)
    a = ms(lambda: native.attention(q, k_, v, None))
    f = ms(lambda: native.training_attention(q, k_, v, None, None, 1.0))
    g = ms(lambda: native.training_attention_backward(out, q, k_, v, None, None, 1.0, stats))
    print(f"attention, q and k of scale {scale:.0f}: inference {a:.2f} ms, training forward {f:.2f}, backward {g:.2f}")
