"""Variants of the vector modules kernel (native.c's xm_modules_vector built with -D sizes into separate libraries)
called directly on one xmod-base layer's modules (d 768, r 384, residual and LayerNorm in the call), alternating
call by call in one process, the default built twice (the second as the control). Layouts as vmods_alone.py.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vmods_variants.py \
        [--rounds 20] [--variants "VM_AHEAD=0;VM_CHUNK=128"]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import xmodlm
from xmodlm.kernels import native


def build(defines: str, folder: Path, index: int) -> ctypes.CDLL:
    target = folder / f"variant{index}.so"
    flags = [f"-D{d}" for d in defines.split(",") if d]
    subprocess.run(["gcc", *native.FLAGS, *flags, str(native.SOURCE), "-o", str(target)], check=True)
    lib = ctypes.CDLL(str(target))
    lib.xm_modules_vector.argtypes = list(native._library().xm_modules.argtypes)
    lib.xm_modules_vector.restype = ctypes.c_int
    return lib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--variants", default="VM_AHEAD=0;VM_CHUNK=128;VM_CHUNK=32;VM_ROWS=12")
    args = parser.parse_args()
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    assert native.vector_available()
    names = ["default", *args.variants.split(";"), "default (control)"]
    folder = Path(tempfile.mkdtemp())
    libs = {name: build("" if name.startswith("default") else name, folder, i) for i, name in enumerate(names)}
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds} x {args.calls} calls", flush=True)
    d, r = 768, 384
    torch.manual_seed(0)
    for title, rows_each, langs in (("8 x 128, 8 languages", 128, 8), ("81 x 32, 81 languages", 32, 81)):
        rows = [rows_each] * langs
        x = torch.randn(sum(rows), d).bfloat16()
        skip = torch.randn(sum(rows), d).bfloat16()
        first = [(native.pack((torch.randn(r, d) / 28).bfloat16()), torch.randn(r) * 0.03) for _ in rows]
        second = [(native.pack((torch.randn(d, r) / 20).bfloat16()), torch.randn(d) * 0.03) for _ in rows]
        norm = (torch.ones(d).bfloat16(), torch.zeros(d).bfloat16(), 1e-5)
        times = {n: [] for n in names}
        outs = {}
        for rnd in range(args.rounds + 2):
            for name in names:
                kernel = libs[name].xm_modules_vector
                start = time.perf_counter()
                for _ in range(args.calls):
                    outs[name] = native._modules(kernel, x, rows, first, second, skip, norm)
                if rnd >= 2:
                    times[name].append((time.perf_counter() - start) / args.calls)
        flops = 2 * 2 * sum(rows) * d * r
        base = statistics.median(times["default"])
        print(title + ": " + "; ".join(
            f"{n} {statistics.median(v) * 1e3:.3f} ms ({flops / statistics.median(v) / 1e9:.0f} GFLOP/s, "
            f"{base / statistics.median(v):.3f}x default, same bits {torch.equal(outs[n], outs['default'])})"
            for n, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
