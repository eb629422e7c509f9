"""Whether the training attention kernels as they are give the same bits as round 8's (native.c of 3cfeab4): the
output, the rows' softmax constants and dq, dk, dv, on random inputs of several shapes (the step's; lengths outside
whole tiles; a key mask with a fully masked row; peaked scores; with and without dropout). Usage:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/training_attention_bits.py"""

import sys
from pathlib import Path

import torch

from xmodlm.kernels import dropout, native

sys.path.insert(0, str(Path(__file__).parent))
from harness import build, old_source  # noqa: E402

torch.set_num_threads(1)
libraries = build({"round 8": old_source("3cfeab4"), "now": native.SOURCE.read_text()})


def run(lib, q, k, v, keys, keep, drop_scale, dout):
    native._STATE["lib"] = lib
    out, stats = native.training_attention(q, k, v, keys, keep, drop_scale)
    grads = native.training_attention_backward(dout, q, k, v, keys, keep, drop_scale, stats)
    return out, stats, grads


cases = [(16, 4, 128, 64, False, True, 1.0), (3, 2, 100, 64, True, True, 1.0), (2, 2, 40, 32, True, False, 1.0),
         (2, 3, 77, 96, True, True, 8.0), (1, 2, 17, 64, False, False, 1.0), (2, 2, 200, 64, True, True, 1.0)]
same = True
for seed, (b, h, t, d, masked, drop, scale) in enumerate(cases):
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(b, t, 3 * h * d, generator=g)).bfloat16()
    q, k, v = x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
    keys = None
    if masked:
        keys = torch.rand(b, t, generator=g) < 0.8
        keys[0] = False  # a row with every key masked
    native._STATE["lib"] = libraries["now"]  # round 8's library draws masks with other arguments
    keep, drop_scale = (dropout.Dropout(0.1).train().keep_mask(torch.empty(b, h, t, t)) if drop else (None, 1.0))
    dout = torch.randn(b, h, t, d, generator=g).bfloat16()
    old, new = (run(lib, q, k, v, keys, keep, drop_scale, dout) for lib in libraries.values())
    equal = [torch.equal(a.view(torch.int16) if a.dtype == torch.bfloat16 else a.view(torch.int32),
                         n.view(torch.int16) if n.dtype == torch.bfloat16 else n.view(torch.int32))
             for a, n in zip(old, new)]
    same &= all(equal)
    print(f"b {b} h {h} t {t:3d} d {d:2d} key mask {masked!s:5s} dropout {drop!s:5s} scale {scale}: "
          f"out {equal[0]}, constants {equal[1]}, dq dk dv {equal[2]}")
print("bit-identical to round 8's kernel" if same else "NOT bit-identical")
