"""Choosing between equivalent formulations of one product by timing them on this machine, once per
shape: what ``torch.backends.cudnn.benchmark`` does for convolutions, here for bf16 CPU inference and the fp32
training linears' weight gradient (oneDNN's product against BLAS's gemm, ``linear.weight_gradient``).

Why: oneDNN's bf16 matrix product splits its work between threads by a heuristic that, for some shapes,
leaves threads idle. On a 2-core Xeon with AMX the feed-forward output product (1,024 tokens x 3,072 ->
768) ran at 1,150-1,270 GFLOP/s while its transpose (768 x 3,072 -> 1,024 tokens, the same kernel)
ran at 1,500-2,600, and the output layout costs one small copy. The fp32 weight gradient sums over the tokens,
the leading dimension of both operands: oneDNN's inner product needs that dimension innermost and copies both
operands transposed (and its result needs laying out again for the larger outputs), where BLAS's gemm takes the
transposes as flags; but torch's BLAS is MKL's, whose fp32 kernels are slower on AMD processors with AVX-512. On a
2-core AVX2 EPYC (2026-12-02, docs/results/amx-perf/round14/) BLAS ran the bench step's weight gradients
1.07-2.15x faster; on the Zen 4 MKL's fp32 product ran at 178 GFLOP/s against oneDNN's 223. Which side wins depends
on the shape, the thread count and the processor, so it is measured, not assumed.

What changes: the candidates compute the same fp32-accumulated products in another order and round
once (the residual and bias enter the accumulator in both); bf16 outputs can differ in the last bit
between the candidates, so between two processes that chose differently. ``use_autotune(False)``
keeps one formulation (bit-reproducible across processes); within a process a shape keeps its choice. A
training run keeps the choices made so far in its checkpoints (``choices``) and a resumed run takes them back
(``restore_choices``) before its first step, so that it continues bit for bit. The ``xmodlm`` command keeps every
choice in a file per machine and takes them back in its next processes (``xmodlm.runtime.use_choice_cache``,
through ``on_new_choice``): on one machine, separate runs make the same choices, so the same bits, and time a
shape once, not once per process.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

_TUNE = {"enabled": True, "min_rows": 256, "rounds": 5, "margin": 0.10, "force": None}
# every candidate name the kernels offer (the first of each set is its default)
NAMES = ("fused", "row blocks", "transposed", "separate activation", "AMX kernel", "AMX kernel, rows split",
         "oneDNN", "BLAS")
# (kind, [rows bucket,] *sizes, threads, candidate names) -> the chosen candidate's name
_CHOICES: dict[tuple, str] = {}
# called as listener(key, name) after each choice made by timing (xmodlm.runtime keeps them in a per-machine file)
_LISTENER: dict[str, Callable[[tuple, str], None] | None] = {"fn": None}


def use_autotune(enabled: bool, min_rows: int | None = None, force: str | None = None) -> None:
    """Measure (True, the default) or not (False: always the first candidate) which formulation of a bf16
    CPU inference product or of an fp32 training weight gradient is fastest. ``min_rows``: products over fewer
    rows never tune (default 256: smaller ones take microseconds, where the timing itself would cost more than any
    choice saves).
    ``force``: take the candidate of that name wherever one is offered, without timing (for tests and
    side-by-side benchmarks). The choices made are kept while switched off (switching back on reuses
    them) and forgotten when ``min_rows`` or ``force`` changes."""
    if min_rows is not None and min_rows < 1:
        raise ValueError(f"min_rows={min_rows}; expected a positive number of rows")
    if force is not None and force not in NAMES:
        raise ValueError(f"force={force!r}; expected one of {NAMES}")
    if force != _TUNE["force"] or (min_rows is not None and min_rows != _TUNE["min_rows"]):
        _CHOICES.clear()
    _TUNE.update(enabled=bool(enabled), force=force)
    if min_rows is not None:
        _TUNE["min_rows"] = int(min_rows)


def autotune_enabled() -> bool:
    """Whether the timed choice is on (``use_autotune``)."""
    return _TUNE["enabled"]


def tuning(rows: int) -> bool:
    return _TUNE["enabled"] and rows >= _TUNE["min_rows"]


def choices() -> dict[tuple, str]:
    """The choices made so far in this process (for reports, tests and checkpoints: plain tuples and strings)."""
    return dict(_CHOICES)


def restore_choices(saved: dict) -> None:
    """Take back choices that ``choices()`` gave (a resumed training run: the same formulations as before the
    interruption, where timing them again could choose otherwise); they replace this process's for the same keys."""
    if not isinstance(saved, dict) or not all(isinstance(k, tuple) and k and isinstance(k[-1], tuple) and v in NAMES
                                              and v in k[-1] for k, v in saved.items()):  # the key ends in the offer
        raise ValueError(f"not a set of kernel choices: {str(saved)[:200]!r}; expected a dict of tuples to one of "
                         f"{NAMES}, as kernels.tune.choices() gives")
    _CHOICES.update(saved)


def on_new_choice(listener: Callable[[tuple, str], None] | None) -> Callable[[tuple, str], None] | None:
    """Call ``listener(key, name)`` after each choice this process makes by timing (not for choices taken back by
    ``restore_choices``, nor forced ones); None: nobody. Returns the listener it replaces."""
    previous, _LISTENER["fn"] = _LISTENER["fn"], listener
    return previous


def bucket(rows: int) -> int:
    """Rows rounded to a power of two: batches of nearby sizes share one measurement."""
    return 1 << max(0, round(math.log2(max(rows, 1))))


def _fastest(candidates: dict[str, Callable[[], torch.Tensor]]) -> str:
    """The candidate with the smallest median time over a few alternating rounds (after one untimed
    call each); another than the first only when it is faster by more than the margin, so that noise
    does not move a shape off the default."""
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        candidates[name]()
    for _ in range(_TUNE["rounds"]):
        for name in names:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    best = min(names, key=medians.__getitem__)
    return best if medians[best] < (1 - _TUNE["margin"]) * medians[names[0]] else names[0]


def choose(key: tuple, candidates: dict[str, Callable[[], object]]) -> str:
    """The name of the candidate chosen for ``key`` (the first candidate is the default), choosing it by timing the
    candidates on the key's first call. The key must hold everything the speed depends on but the data."""
    if _TUNE["force"] is not None:
        return _TUNE["force"] if _TUNE["force"] in candidates else next(iter(candidates))
    key = key + (torch.get_num_threads(), tuple(candidates))  # another set on offer (a kernel switched off): its own choice
    name = _CHOICES.get(key)
    if name is None:
        name = _CHOICES[key] = _fastest(candidates)
        if _LISTENER["fn"] is not None:
            _LISTENER["fn"](key, name)
    return name


def run_fastest(key: tuple, candidates: dict[str, Callable[[], torch.Tensor]]) -> tuple[str, torch.Tensor]:
    """The name and result of the candidate ``choose`` takes for ``key``."""
    name = choose(key, candidates)
    return name, candidates[name]()
