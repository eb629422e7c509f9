"""Variants of xm_attention_vector against the committed one, alone, one thread: each variant's native.c (a patch
applied to a copy) built with native.py's flags into its own library, every library called on the same heads in
turn, one call each per round; medians over the rounds. The patches: vattn-*.diff beside this script.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vattn_variants.py \
        NAME=PATCH.diff ... [--rounds 40]
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import xmodlm
from xmodlm.kernels import native


def build(source: Path, patch: Path | None, folder: Path, name: str) -> ctypes.CDLL:
    copy = folder / f"{name}.c"
    shutil.copy(source, copy)
    if patch is not None:
        subprocess.run(["patch", "-s", str(copy), str(patch)], check=True)
    target = folder / f"{name}.so"
    subprocess.run(["gcc", *native.FLAGS, str(copy), "-o", str(target)], check=True)
    lib = ctypes.CDLL(str(target))
    lib.xm_attention_vector.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 7 + [ctypes.c_void_p, ctypes.c_float,
                                                                                     ctypes.c_void_p]
    lib.xm_attention_vector.restype = ctypes.c_int
    return lib


def call(lib, q, k, v, keep, out):
    b, h, t, d = q.shape
    return lib.xm_attention_vector(q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), q.stride(1), q.stride(2), b,
                                   h, t, d, None if keep is None else keep.data_ptr(), d ** -0.5, out.data_ptr())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", help="NAME=PATCH")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    folder = Path(tempfile.mkdtemp(prefix="vattn"))
    libs = {"committed": build(native.SOURCE, None, folder, "committed")}
    for spec in args.variants:
        name, patch = spec.split("=")
        libs[name] = build(native.SOURCE, Path(patch).resolve(), folder, name)
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds}; ms per call, median (min)")
    for b, t, masked in [(8, 128, False), (8, 128, True), (81, 32, False), (8, 32, False)]:
        torch.manual_seed(0)
        q, k, v = torch.randn(b, t, 3, 12, 64).bfloat16().permute(2, 0, 3, 1, 4).unbind(0)
        keep = None
        if masked:
            keep = torch.ones(b, t, dtype=torch.bool)
            for row in range(b):
                keep[row, t - (row * 7) % (t // 2):] = False
        outs = {name: torch.empty(b, t, 12, 64, dtype=torch.bfloat16) for name in libs}
        times = {name: [] for name in libs}
        for name, lib in libs.items():
            call(lib, q, k, v, keep, outs[name])
        same = all(torch.equal(outs[name], outs["committed"]) for name in libs)
        for _ in range(args.rounds):
            for name, lib in libs.items():
                start = time.perf_counter()
                call(lib, q, k, v, keep, outs[name])
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["committed"])
        print(f"B {b:3d} T {t:3d} {'masked  ' if masked else 'unmasked'}: "
              + "  ".join(f"{name} {statistics.median(ts) * 1e3:.3f} ({min(ts) * 1e3:.3f}, "
                          f"{base / statistics.median(ts):.3f}x)" for name, ts in times.items())
              + f"; {'the same bits' if same else 'different bits'}", flush=True)


if __name__ == "__main__":
    main()
