"""Where the language modules' training kernels spend their time: native.c as built beside copies with one part
removed (wrong results; only the times count), forward (native.modules_train) and backward
(native.modules_train_backward) at the bench step's shape (8 segments x 256 rows, d 256, r 128), one thread, the
variants alternating call by call in one process, their order rotated each round. Every variant's backward reads the
same inputs (the forward as built). native.c is taken from git at REVISION (the first argument; by default 06517db,
whose modules section is round 8's, 3cfeab4's), as the cuts below match its text. Run pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/modules_training_parts.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time

import torch

import xmodlm
from xmodlm.kernels import native
from xmodlm.runtime import machine_info

from harness import build, old_source

SEGMENTS, ROWS, D, R, ROUNDS = 8, 256, 256, 128, 40


def cut(text: str, old: str, new: str = "") -> str:
    if text.count(old) != 1:
        raise SystemExit(f"{old[:60]!r} occurs {text.count(old)} times in native.c: update this script")
    return text.replace(old, new)


def variants(text: str) -> dict:
    """name -> (source, which call it changes: "forward", "backward" or "both")."""
    fwd_call_h = "mt_product(st, x + start * d, d, 32, 16 * d, 32 * d, rows[s], m, w1, d / 32, r, &inner, padded);"
    fwd_call_y = "mt_product(st, g + start * r, r, 32, 16 * r, 32 * r, rows[s], m, w2, r / 32, d, &outer, padded);"
    v = {"as built": (text, "both"), "as built, a second copy (noise)": (text + "\n/* copy */\n", "both")}
    v["fwd: no weight rounding+packing for the forward (mt_pack_rows x2)"] = (cut(cut(
        text, "mt_pack_rows((const float *)w1s[s], r, d, w1);"), "mt_pack_rows((const float *)w2s[s], d, r, w2);"),
        "forward")
    v["fwd: no weight rounding+packing for the backward (mt_pack_pairs x2)"] = (cut(cut(
        text, "mt_pack_pairs((const float *)w2s[s], d, r, pairs + 2 * s * r * d);"),
        "mt_pack_pairs((const float *)w1s[s], r, d, pairs + (2 * s + 1) * r * d);"), "forward")
    v["fwd: no GELU/slope (erf): H+b1 stored to g and h"] = (cut(
        text, "mt_store(e->g + at, gelu_erf_and_slope(_mm512_add_ps(v, _mm512_loadu_ps(e->bias + c)), &slope));",
        "slope = _mm512_add_ps(v, _mm512_loadu_ps(e->bias + c)); mt_store(e->g + at, slope);"), "forward")
    v["fwd: no H product (its call, epilogue included)"] = (cut(text, fwd_call_h), "forward")
    v["fwd: no y product (its call, epilogue included)"] = (cut(text, fwd_call_y), "forward")
    v["both: no tile products (block_step off; epilogues run)"] = (cut(
        text, "block_step(a0 + kt * step_a, a1 + kt * step_a, ld_a, b0 + kt * 512, b1 + kt * 512);"), "both")
    v["both: no epilogues (mt_drain does nothing)"] = (cut(
        text, "mt_pending *p, int64_t units) {\n",
        "mt_pending *p, int64_t units) {\n    p->next = p->units;\n    return;\n"), "both")
    v["both: no tile stores/zeroing (acc never written)"] = (cut(cut(cut(cut(
        text, "_tile_stored(0, acc, 128);\n            _tile_stored(1, acc + 16, 128);\n"
              "            _tile_stored(2, acc + 512, 128);\n            _tile_stored(3, acc + 528, 128);\n"
              "            pending = (mt_pending){acc, row,", "            pending = (mt_pending){acc, row,"),
        "_tile_zero(0);\n            _tile_zero(1);\n            _tile_zero(2);\n            _tile_zero(3);\n"
        "            for (int64_t kt = 0; kt < k_tiles; kt++) {\n                block_step(a0",
        "for (int64_t kt = 0; kt < k_tiles; kt++) {\n                block_step(a0"), "float *acc = st->acc[st->current];",
        "float *acc = st->acc[st->current]; (void)0;"), "(void)0;", ""), "both")
    v["bwd: no db2 sums"] = (cut(
        text, "_mm512_storeu_ps(db2 + j, _mm512_add_ps(_mm512_loadu_ps(db2 + j), load_bf16(dys + i * d + j)));",
        ";"), "backward")
    v["bwd: no dy^T, dH^T layouts (mt_pack_transposed x2)"] = (cut(cut(
        text, "mt_pack_transposed(dys, n, m, d, left);"), "mt_pack_transposed(dh, n, m, r, left);"), "backward")
    v["bwd: no G, x pair layouts (pack_pairs x2)"] = (cut(cut(
        text, "pack_pairs(g + start * r, r, n, m, r, right);"), "pack_pairs(xs, d, n, m, d, right);"), "backward")
    v["bwd: no dW2 product"] = (cut(
        text, "mt_product(st, left, 32, 512, tiles * 512, 2 * tiles * 512, d, d, right, tiles, r, &weights2, padded);"),
        "backward")
    v["bwd: no dG = dy W2 product (dH epilogue included)"] = (cut(
        text, "mt_product(st, dys, d, 32, 16 * d, 32 * d, n, m, pairs + 2 * s * r * d, d / 32, r, &hidden, padded);"),
        "backward")
    v["bwd: no dx product"] = (cut(
        text, "mt_product(st, dh, r, 32, 16 * r, 32 * r, n, m, pairs + (2 * s + 1) * r * d, r / 32, d, &input, padded);"),
        "backward")
    v["bwd: no dW1 product"] = (cut(
        text, "mt_product(st, left, 32, 512, tiles * 512, 2 * tiles * 512, r, r, right, tiles, d, &weights1, padded);"),
        "backward")
    v["bwd: no float32 weight-gradient stores"] = (cut(
        text, "if (e->stream) _mm512_stream_ps(e->fout + at, v);\n            else _mm512_storeu_ps(e->fout + at, v);",
        "(void)v;"), "backward")
    v["bwd: weight gradients by plain stores (not streamed)"] = (cut(
        text, "if (e->stream) _mm512_stream_ps(e->fout + at, v);", "if (0) _mm512_stream_ps(e->fout + at, v);"),
        "backward")
    return v


def main() -> None:
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    revision = sys.argv[1] if len(sys.argv) > 1 else "06517db"
    text = old_source(revision)
    print(f"native.c as of {revision}")
    libraries = build({name: source for name, (source, _) in variants(text).items()})
    torch.manual_seed(0)
    x = torch.randn(SEGMENTS * ROWS, D).bfloat16()
    dy = torch.randn(SEGMENTS * ROWS, D).bfloat16()
    w1s = [torch.randn(R, D) / D ** 0.5 for _ in range(SEGMENTS)]
    b1s = [torch.randn(R) * 0.1 for _ in range(SEGMENTS)]
    w2s = [torch.randn(D, R) / R ** 0.5 for _ in range(SEGMENTS)]
    b2s = [torch.randn(D) * 0.1 for _ in range(SEGMENTS)]
    counts = [ROWS] * SEGMENTS
    native._STATE["lib"] = libraries["as built"]
    _, slope, g, pairs = native.modules_train(x, counts, w1s, b1s, w2s, b2s)
    names = list(libraries)
    times = {name: {"forward": [], "backward": []} for name in names}
    for i in range(ROUNDS + 2):
        order = names[:]
        random.Random(i).shuffle(order)
        for name in order:
            native._STATE["lib"] = libraries[name]
            start = time.perf_counter()
            native.modules_train(x, counts, w1s, b1s, w2s, b2s)
            mid = time.perf_counter()
            native.modules_train_backward(dy, x, slope, g, pairs, counts)
            if i >= 2:
                times[name]["forward"].append(mid - start)
                times[name]["backward"].append(time.perf_counter() - mid)
    base = {k: statistics.median(times["as built"][k]) for k in ("forward", "backward")}
    print(f"{SEGMENTS} segments x {ROWS} rows, d {D}, r {R}; medians of {ROUNDS} calls, ms (saved against as built)")
    print(f"{'variant':62s} {'forward':>8s} {'saved':>7s} {'backward':>9s} {'saved':>7s}")
    for name in names:
        f, b = (statistics.median(times[name][k]) for k in ("forward", "backward"))
        print(f"{name:62s} {f * 1e3:8.3f} {(base['forward'] - f) * 1e3:7.3f} {b * 1e3:9.3f} "
              f"{(base['backward'] - b) * 1e3:7.3f}")
    flops = 2 * SEGMENTS * ROWS * D * R
    print(f"as built: forward {2 * flops / base['forward'] / 1e9:.0f} GFLOP/s, backward "
          f"{4 * flops / base['backward'] / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
