"""Shared by this round's scripts: libraries built from variants of native.c (under a temporary XMODLM_KERNEL_CACHE,
native.SOURCE pointed at each variant file, native._STATE reset; native._STATE["lib"] swapped between runs); training
steps alternating the variants, with the time spent inside chosen calls; and for the training attention scripts the
step's attention inputs and the forward and backward timed call by call, the variants alternating.

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


ATTENTION = "/* Training: softmax attention in bf16 autocast training", "/* Training: the vocabulary projection"
WEIGHT_GRAD = "/* Training: a linear's weight and bias gradients", "/* Training: GELU and its backward"


def with_section_of(text: str, other: str, bounds: tuple) -> str:
    """native.c `text` with the section from bounds[0] up to bounds[1] taken from `other`: every other kernel the
    same, so that a variant differs from `text` in that section alone and binds with today's native.py."""
    head, tail = bounds
    return text[:text.index(head)] + other[other.index(head):other.index(tail)] + text[text.index(tail):]


def with_attention_of(text: str, other: str) -> str:
    """with_section_of for the training attention section, whose calls of query_rows get the row count that
    argument took after round 9 (16) where `text` has it and `other` does not."""
    spliced = with_section_of(text, other, ATTENTION)
    if "int64_t n, uint16_t *pad, int64_t *stride)" in text:
        spliced = spliced.replace(", d, qpad, &qstride)", ", d, 16, qpad, &qstride)").replace(
            ", d, gpad, &gstride)", ", d, 16, gpad, &gstride)")
    return spliced


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


class Inside:
    """The seconds each step spends inside the functions wrapped by ``wrap`` (``start()`` before every step)."""

    def __init__(self):
        self.spent = [0.0]

    def start(self) -> None:
        self.spent.append(0.0)

    def wrap(self, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[-1] += time.perf_counter() - start
        return call


def alternate(names: list, choose, step, rounds: int, warm: int = 4, inside: Inside | None = None) -> tuple:
    """({name: [seconds a step]}, {name: [seconds inside]}): `warm` untimed steps, then `rounds` of each variant,
    the variants taking turns step by step, ``choose(name)`` before each of its steps; ``step()`` returns the step's
    seconds (or its phases' seconds, summed)."""
    steps, within = {name: [] for name in names}, {name: [] for name in names}
    for i in range(warm + len(names) * rounds):
        name = names[i % len(names)]
        choose(name)
        if inside is not None:
            inside.start()
        took = step()
        if i >= warm:
            steps[name].append(sum(took) if isinstance(took, tuple) else took)
            within[name].append(inside.spent[-1] if inside is not None else 0.0)
    return steps, within


def steps_inside(libraries: dict, step, functions: tuple, rounds: int, warm: int = 4) -> tuple:
    """``alternate`` over {name: library} (native pointed at each in turn) with native's ``functions`` (names)
    wrapped: ({name: [seconds a step]}, {name: [seconds inside those functions]})."""
    inside = Inside()
    for function in functions:
        setattr(native, function, inside.wrap(getattr(native, function)))
    return alternate(list(libraries), lambda name: native._STATE.update(lib=libraries[name]), step, rounds, warm,
                     inside)


def print_steps(steps: dict, within: dict, what: str) -> None:
    """The table of ``alternate``'s results: each variant's step and time inside `what` (median, min), then the first
    variant's step less the last's."""
    print(f"{torch.get_num_threads()} thread(s); bf16 MLM step, ms (median of {len(next(iter(steps.values())))}, "
          f"min), and {what} within it:")
    for name in steps:
        print(f"  {name:8s} step {statistics.median(steps[name]) * 1e3:.1f}  {min(steps[name]) * 1e3:.1f}   "
              f"{what} {statistics.median(within[name]) * 1e3:.2f}  {min(within[name]) * 1e3:.2f}")
    first, last = (statistics.median(steps[k]) for k in (next(iter(steps)), list(steps)[-1]))
    print(f"  step {next(iter(steps))} - {list(steps)[-1]}: {(first - last) * 1e3:.2f} ms ({first / last:.3f}x)")


def calls_of(module, name: str, step, steps: int = 2) -> list:
    """The (cloned) positional arguments of every call of ``module.<name>`` in the last of `steps` calls of
    ``step()``: a training step's calls of one kernel, for replaying."""
    original, saved = getattr(module, name), []

    def keep(*args, **kwargs):
        saved.append([a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        return original(*args, **kwargs)

    setattr(module, name, keep)
    try:
        for _ in range(steps):
            saved.clear()
            step()
    finally:
        setattr(module, name, original)
    return saved


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
