"""Where the language modules' training kernels spend their time now (round 11, issue #19): native.c as built beside
copies with one part removed (wrong results; only the times count), forward (native.modules_train) and backward
(native.modules_train_backward) at the bench step's shape (8 segments x 256 rows, d 256, r 128), one thread, the
variants alternating call by call in one process, their order shuffled each round; "as built, a second copy" is the
control. Every variant's backward reads the same inputs (the forward as built). Each part's bytes (read + written,
per call of 8 segments) and, for the products, FLOP rate from its time saved. round9/modules_training_parts.py's
cuts, updated to today's text (mt_drain's locals, mt_product's ahead argument). native.c is taken from the working
tree, or from git at the first argument. Run pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/modtrain_parts.py [REV]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build, old_source  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

SEGMENTS, ROWS, D, R, ROUNDS = 8, 256, 256, 128, 40
N = SEGMENTS * ROWS
PRODUCT = 2 * N * D * R  # FLOP of one of the six products over all segments
KB = 1024


def cut(text: str, old: str, new: str = "") -> str:
    if text.count(old) != 1:
        raise SystemExit(f"{old[:60]!r} occurs {text.count(old)} times in native.c: update this script")
    return text.replace(old, new)


def variants(text: str) -> dict:
    """name -> (source, bytes the part moves per call or 0, FLOP of the part or 0)."""
    w32, w16 = SEGMENTS * 2 * R * D * 4, SEGMENTS * 2 * R * D * 2
    v = {"as built": (text, 0, 0), "as built, a second copy (control)": (text + "\n/* copy */\n", 0, 0)}
    if "mt_pack_rows((const float *)w1s[s], r, d, w1);" in text:  # 743cd67: each layout from its own rounding
        v["fwd: no mt_pack_rows x2 (W1, W2 to bf16 tiles)"] = (cut(cut(
            text, "mt_pack_rows((const float *)w1s[s], r, d, w1);"), "mt_pack_rows((const float *)w2s[s], d, r, w2);"),
            w32 + w16, 0)
        v["fwd: no mt_pack_pairs x2 (the backward's W2, W1)"] = (cut(cut(
            text, "mt_pack_pairs((const float *)w2s[s], d, r, pairs + 2 * s * r * d);"),
            "mt_pack_pairs((const float *)w1s[s], r, d, pairs + (2 * s + 1) * r * d);"), w32 + w16, 0)
    else:  # both layouts from one rounding (mt_pack_rows with pairs)
        v["fwd: no weight packing at all (mt_pack_rows x2, both layouts)"] = (cut(cut(
            text, "mt_pack_rows((const float *)w1s[s], r, d, w1, aligned ? pairs + (2 * s + 1) * r * d : NULL);"),
            "mt_pack_rows((const float *)w2s[s], d, r, w2, aligned ? pairs + 2 * s * r * d : NULL);"),
            w32 + 2 * w16, 0)
        v["fwd: no backward layout (pairs) in mt_pack_rows"] = (cut(cut(
            text, "aligned ? pairs + (2 * s + 1) * r * d : NULL);", "NULL);"),
            "aligned ? pairs + 2 * s * r * d : NULL);", "NULL);"), w16, 0)
    v["fwd: no GELU+slope (H+b1 stored to g and h)"] = (cut(
        text, "mt_store(g + at, gelu_erf_and_slope(_mm512_add_ps(v, _mm512_loadu_ps(bias + c)), &slope));",
        "slope = _mm512_add_ps(v, _mm512_loadu_ps(bias + c)); mt_store(g + at, slope);"), 0, 0)
    v["fwd: no H product (call, epilogue and fetch ahead)"] = (cut(
        text, "mt_product(st, x + start * d, d, 32, 16 * d, 32 * d, rows[s], m, w1, d / 32, r, &inner, padded, "
              "&ahead);"), 0, PRODUCT)
    v["fwd: no y product (call, epilogue and fetch ahead)"] = (cut(
        text, "mt_product(st, g + start * r, r, 32, 16 * r, 32 * r, rows[s], m, w2, r / 32, d, &outer, padded, "
              "&ahead);"), 0, PRODUCT)
    v["fwd: no fetch ahead (mt_ahead_until)"] = (cut(
        text, "if (ahead) mt_ahead_until(ahead, ahead->total * ++step / steps);", "(void)step;"), 0, 0)
    v["both: no tile products (block_step off; epilogues run)"] = (cut(
        text, "block_step(a0 + kt * step_a, a1 + kt * step_a, ld_a, b0 + kt * 512, b1 + kt * 512);"), 0, 0)
    v["both: no epilogues (mt_drain does nothing)"] = (cut(
        text, "mt_pending *p, int64_t units) {\n",
        "mt_pending *p, int64_t units) {\n    p->next = p->units;\n    return;\n"), 0, 0)
    v["both: no tile stores to acc"] = (cut(
        text, "_tile_stored(0, acc, 128);\n            _tile_stored(1, acc + 16, 128);\n"
              "            _tile_stored(2, acc + 512, 128);\n            _tile_stored(3, acc + 528, 128);\n"
              "            pending = (mt_pending){acc, row,", "            pending = (mt_pending){acc, row,"), 0, 0)
    if "mt_pack_transposed(dys, n, m, d, left);" in text:  # round 9's backward: db2 a pass of its own
        v["bwd: no db2 sums"] = (cut(
            text, "_mm512_storeu_ps(db2 + j, _mm512_add_ps(_mm512_loadu_ps(db2 + j), load_bf16(dys + i * d + j)));",
            ";"), N * D * 2, 0)
        v["bwd: no dy^T layout (mt_pack_transposed)"] = (cut(text, "mt_pack_transposed(dys, n, m, d, left);"),
                                                          3 * N * D * 2, 0)
        v["bwd: no dH^T layout (mt_pack_transposed)"] = (cut(text, "mt_pack_transposed(dh, n, m, r, left);"),
                                                          3 * N * R * 2, 0)
    else:  # db2 summed as dy^T is laid out, in one pass
        v["bwd: no db2 sums (inside dy^T's layout)"] = (cut(
            text, "mt_pack_transposed(dys, n, m, d, left, db2);", "mt_pack_transposed(dys, n, m, d, left, NULL);"),
            0, 0)
        v["bwd: no dy^T layout and db2 (mt_pack_transposed)"] = (cut(
            text, "mt_pack_transposed(dys, n, m, d, left, db2);"), 2 * N * D * 2, 0)
        v["bwd: no dH^T layout (mt_pack_transposed)"] = (cut(text, "mt_pack_transposed(dh, n, m, r, left, NULL);"),
                                                          2 * N * R * 2, 0)
    v["bwd: no G pair layout (pack_pairs)"] = (cut(text, "pack_pairs(g + start * r, r, n, m, r, right);"),
                                                2 * N * R * 2, 0)
    v["bwd: no x pair layout (pack_pairs)"] = (cut(text, "pack_pairs(xs, d, n, m, d, right);"), 2 * N * D * 2, 0)
    v["bwd: no dW2 product (+ its stores)"] = (cut(
        text, "mt_product(st, left, 32, 512, tiles * 512, 2 * tiles * 512, d, d, right, tiles, r, &weights2, padded,\n"
              "                       NULL);"), 0, PRODUCT)
    v["bwd: no dG = dy W2 product (+ dH epilogue, db1)"] = (cut(
        text, "mt_product(st, dys, d, 32, 16 * d, 32 * d, n, m, pairs + 2 * s * r * d, d / 32, r, &hidden, padded, "
              "NULL);"), 0, PRODUCT)
    v["bwd: no dx product (+ its stores)"] = (cut(
        text, "mt_product(st, dh, r, 32, 16 * r, 32 * r, n, m, pairs + (2 * s + 1) * r * d, r / 32, d, &input, "
              "padded,\n                       NULL);"), 0, PRODUCT)
    v["bwd: no dW1 product (+ its stores)"] = (cut(
        text, "mt_product(st, left, 32, 512, tiles * 512, 2 * tiles * 512, r, r, right, tiles, d, &weights1, padded,\n"
              "                       NULL);"), 0, PRODUCT)
    v["bwd: no float32 weight-gradient stores"] = (cut(
        text, "if (e->stream) _mm512_stream_ps(fout + at, v);\n            else _mm512_storeu_ps(fout + at, v);",
        "(void)v;"), SEGMENTS * 2 * R * D * 4, 0)
    v["bwd: weight gradients by plain stores (not streamed)"] = (cut(
        text, "if (e->stream) _mm512_stream_ps(fout + at, v);", "if (0) _mm512_stream_ps(fout + at, v);"), 0, 0)
    return v


def main() -> None:
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    text = old_source(sys.argv[1]) if len(sys.argv) > 1 else native.SOURCE.read_text()
    print(f"native.c {'as of ' + sys.argv[1] if len(sys.argv) > 1 else 'of the working tree'}")
    table = variants(text)
    libraries = build({name: source for name, (source, _, _) in table.items()})
    torch.manual_seed(0)
    x = torch.randn(N, D).bfloat16()
    dy = torch.randn(N, D).bfloat16()
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
    print(f"{SEGMENTS} segments x {ROWS} rows, d {D}, r {R}; medians of {ROUNDS} calls, ms (saved: as built - variant;"
          f" bytes per call; rate = bytes or FLOP / saved)")
    print(f"{'variant':56s} {'forward':>8s} {'saved':>7s} {'backward':>9s} {'saved':>7s} {'KB':>6s} {'rate':>12s}")
    for name in names:
        _, moved, flop = table[name]
        f, b = (statistics.median(times[name][k]) for k in ("forward", "backward"))
        saved = max(base["forward"] - f, base["backward"] - b)
        rate = ""
        if saved > 0 and flop:
            rate = f"{flop / saved / 1e9:.0f} GFLOP/s"
        elif saved > 0 and moved:
            rate = f"{moved / saved / 1e9:.1f} GB/s"
        print(f"{name:56s} {f * 1e3:8.3f} {(base['forward'] - f) * 1e3:7.3f} {b * 1e3:9.3f} "
              f"{(base['backward'] - b) * 1e3:7.3f} {moved // KB if moved else '':>6} {rate:>12s}")
    print(f"as built: forward {2 * PRODUCT / base['forward'] / 1e9:.0f} GFLOP/s, backward "
          f"{4 * PRODUCT / base['backward'] / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
