"""Shared by training_attention_parts.py, training_attention_alone.py and training_attention_step.py: libraries built
from variants of native.c (under a temporary XMODLM_KERNEL_CACHE, native.SOURCE pointed at each variant file,
native._STATE reset; native._STATE["lib"] swapped between runs), the training step's attention inputs, and the
forward and backward timed call by call, the variants alternating.

The inputs are the bench's training step's (batch 16, 4 heads, T 128, d 64): q, k, v the heads of one bf16
(16, 128, 3 * 256) projection (as the model views them), the attention dropout's keep mask (p 0.1, the step's draw),
no key mask (the step's batch has no padding: the model passes none)."""

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from xmodlm.kernels import dropout, native

ROOT = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=Path(__file__).parent, check=True,
                           capture_output=True, text=True).stdout.strip())
B, H, T, D = 16, 4, 128, 64


def old_source(commit: str, path: str = "src/xmodlm/kernels/native.c") -> str:
    return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def replaced(text: str, old: str, new: str, count: int = 1) -> str:
    """text with `old` (found exactly `count` times) replaced by `new`: a variant that no longer applies stops."""
    found = text.count(old)
    if found != count:
        raise SystemExit(f"expected {count} of {old!r} in native.c, found {found}: update this script")
    return text.replace(old, new)


def build(sources: dict) -> dict:
    """{name: ctypes library} built from {name: native.c text}; native left pointing at the first."""
    folder = tempfile.mkdtemp()
    os.environ["XMODLM_KERNEL_CACHE"] = folder
    libraries = {}
    for i, (name, text) in enumerate(sources.items()):
        path = Path(folder) / f"variant{i}.c"
        path.write_text(text)
        native.SOURCE = path
        native._STATE.update(lib=None, tried=False)
        libraries[name] = native._library()
        if libraries[name] is None:
            raise SystemExit(f"{name}: {native.reason()}")
    native._STATE["lib"] = next(iter(libraries.values()))
    return libraries


def inputs(library, seed: int = 0):
    """(q, k, v, keys, keep, drop_scale, dout) at the step's shape, the keep mask drawn by `library` (one built from
    today's native.c: round 8's draws its masks with other arguments)."""
    native._STATE["lib"] = library
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 3 * H * D, generator=g).bfloat16()
    q, k, v = x.view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
    torch.manual_seed(seed)
    keep, drop_scale = dropout.Dropout(0.1).train().keep_mask(torch.empty(B, H, T, T))
    dout = torch.randn(B, T, H, D, generator=g).bfloat16().permute(0, 2, 1, 3)  # as the output's gradient comes
    return q, k, v, None, keep, drop_scale, dout


def time_calls(libraries: dict, rounds: int, calls: int, args) -> dict:
    """{name: ([forward ms per call], [backward ms per call])}, one entry per round; the rounds alternate the
    libraries, each round `calls` forwards then `calls` backwards (the backwards on the first library's stats)."""
    q, k, v, keys, keep, drop_scale, dout = args
    native._STATE["lib"] = next(iter(libraries.values()))
    _, stats = native.training_attention(q, k, v, keys, keep, drop_scale)
    times = {name: ([], []) for name in libraries}
    for r in range(rounds + 1):
        for name, lib in libraries.items():
            native._STATE["lib"] = lib
            start = time.perf_counter()
            for _ in range(calls):
                native.training_attention(q, k, v, keys, keep, drop_scale)
            mid = time.perf_counter()
            for _ in range(calls):
                native.training_attention_backward(dout, q, k, v, keys, keep, drop_scale, stats)
            end = time.perf_counter()
            if r:  # the first round warms up
                times[name][0].append((mid - start) / calls * 1e3)
                times[name][1].append((end - mid) / calls * 1e3)
    return times


def report(times: dict, base: str) -> None:
    f0, b0 = (statistics.median(x) for x in times[base])
    print(f"{'variant':44s} {'forward':>8s} {'(min)':>7s} {'saved':>6s}   {'backward':>8s} {'(min)':>7s} {'saved':>6s}")
    for name, (f, b) in times.items():
        fm, bm = statistics.median(f), statistics.median(b)
        print(f"{name:44s} {fm:8.3f} {min(f):7.3f} {f0 - fm:6.3f}   {bm:8.3f} {min(b):7.3f} {b0 - bm:6.3f}")
