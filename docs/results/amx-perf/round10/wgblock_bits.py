"""xm_weight_grad of the working tree's native.c against --base's (built from git), bit for bit: dW and db for the
step's shapes, odd T, odd block counts, K not a multiple of X's chunk width and several chunks, at 1, 2 and 3
threads (each library's result at each thread count against the base's at one thread).
Usage: taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/wgblock_bits.py
[--base 26ffb5a]"""

import argparse
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import xmodlm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round9"))
from harness import build, old_source  # noqa: E402
from xmodlm.kernels import native  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="26ffb5a")
args = parser.parse_args()
torch.set_num_threads(1)
xmodlm.tune_allocator()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print("taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 " + " ".join(sys.argv), f"| commit {commit} |",
      datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
libraries = build({"base": old_source(args.base), "tree": native.SOURCE.read_text()})
original = native.weight_grad
SHAPES = [(2048, 768, 256), (2048, 256, 256), (2048, 1024, 256), (2048, 256, 1024), (303, 256, 256), (77, 64, 96),
          (77, 160, 96), (31, 32, 32), (303, 96, 800), (2048, 96, 288), (4000, 96, 320), (1, 32, 64),
          (1031, 224, 1056), (2047, 32, 2080)]
for t, n, k in SHAPES:
    g = torch.Generator().manual_seed(t + n + k)
    dy, x = torch.randn(t, n, generator=g).bfloat16(), torch.randn(t, k, generator=g).bfloat16()
    native._STATE["lib"] = libraries["base"]
    torch.set_num_threads(1)
    ref = original(dy, x)
    same = []
    for name in ("base", "tree"):
        native._STATE["lib"] = libraries[name]
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            got = original(dy, x)
            same.append(torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]))
            no_bias = original(dy, x, bias_grad=False)
            same.append(torch.equal(no_bias[0], ref[0]) and no_bias[1] is None)
    print(f"T x N x K {t} x {n} x {k}: dW, db bit-identical to base at 1 thread (base, tree x 1, 2, 3 threads; "
          f"with and without db): {all(same)}")
    assert all(same)
