"""Where the inference attention kernel's time goes (xmod-base: 8 x 128 tokens, 12 heads of 64): the kernel as built
against copies of native.c with one part removed (the results of those are wrong; only their times matter):
k and v laid out for the tile unit once instead of per (example, head); the exponentials left out of the softmax;
the probabilities-times-v product left out. Each variant in its own process on a copy of the source, one thread.
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round8/attention_parts.py"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[4] / "src" / "xmodlm" / "kernels" / "native.c"
CHILD = r"""
import statistics, sys, time
from pathlib import Path
import torch
from xmodlm.kernels import native
native.SOURCE = Path(sys.argv[1])
torch.manual_seed(0)
b, t, h, d = 8, 128, 12, 64
qkv = torch.randn(b, t, 3 * h * d).bfloat16()
q, k, v = (qkv[..., i * h * d:(i + 1) * h * d].view(b, t, h, d).transpose(1, 2) for i in range(3))
keep = torch.ones(b, t, dtype=torch.bool)
def med(f, n=50):
    for _ in range(5): f()
    ts = []
    for _ in range(n):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return statistics.median(ts)
runs = [med(lambda: native.attention(q, k, v, keep)) for _ in range(3)]
per = min(runs) / (b * h) * torch.get_num_threads()
print(f"{sys.argv[2]:<28s} {min(runs) * 1e3:.3f} ms a call (best of 3 medians), {per * 1e6:.1f} us per (example, head)")
"""


def variants(src: str) -> dict[str, str]:
    start, end = src.index("int xm_attention(const uint16_t *q"), src.index("/* Training: the masked-LM loss")
    body = src[start:end]
    edits = {
        "as built": body,
        "k, v laid out once": body.replace(
            "            pack_transposed(kh, st, t, padded_t, d, kp);\n            pack_pairs(vh, st, t, padded_t, d, vp);\n",
            "            if (item < 2) { pack_transposed(kh, st, t, padded_t, d, kp); pack_pairs(vh, st, t, padded_t, d, vp); }\n"),
        "no exponentials": body.replace(
            "__m512 p = _mm512_maskz_mov_ps(live_keys[j >> 4], exp2_nonpositive(x));", "__m512 p = x;").replace(
            "__m512 p2 = _mm512_maskz_mov_ps(live_keys[(j >> 4) + 1], exp2_nonpositive(x2));", "__m512 p2 = x2;"),
        "no probabilities @ v": body.replace("rows_by_pairs(probs, padded_t, 32, vp, padded_t / 32, d, o);", ""),
    }
    for name, edited in edits.items():
        if name != "as built" and edited == body:
            raise SystemExit(f"the variant {name!r} no longer applies to native.c: update this script")
    return {name: src[:start] + edited + src[end:] for name, edited in edits.items()}


with tempfile.TemporaryDirectory() as folder:
    env = dict(os.environ, XMODLM_KERNEL_CACHE=folder)
    for i, (name, text) in enumerate(variants(SOURCE.read_text()).items()):
        path = Path(folder) / f"variant{i}.c"
        path.write_text(text)
        subprocess.run([sys.executable, "-c", CHILD, str(path), name], env=env, check=True)
