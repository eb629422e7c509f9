"""Where today's vocabulary projection spends its time at the bench step's shape (303 x 256, V 32,000, the float32
weight and bias, targets drawn), as the training step calls it: the forward with the row statistics writing W16
(`pairs`), the backward forming the loss's gradient from the logits and reading W16, dX, dW and db all asked for.
Variants of native.c with one part removed (the results wrong on purpose: the time of the rest), the variants taking
turns, ROUNDS rounds of CALLS calls each (VARIANTS "before": the variants of d35d535's code, to be run
there; "new", the default: this tree's); "now again" is a second library built from the same source (the method's
spread). One thread. Usage, pinned:

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/vocab2_parts.py \
        [ROUNDS] [CALLS] [VARIANTS]
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
import xmodlm  # noqa: E402
from harness import build as build_libraries, replaced  # noqa: E402
from xmodlm.kernels import native  # noqa: E402
from xmodlm.runtime import machine_info  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.set_num_threads(1)
xmodlm.tune_allocator()
print(machine_info().get("cpu", ""), f"torch {torch.__version__}, {torch.get_num_threads()} thread")
now = native.SOURCE.read_text()
VARIANTS = sys.argv[3] if len(sys.argv) > 3 else "new"  # "before": d35d535's code (the variants of the first table)
WEIGHT_PRODUCTS = ("            for (int64_t kt = 0; kt < k_tiles; kt++)\n"
                   "                block_step(a0 + kt * 512, a1 + kt * 512, 32, b0 + kt * 512, b1 + kt * 512);\n")
DX_ACC = ("            if (first) {\n"
          "                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);\n"
          "            } else {\n"
          "                _tile_loadd(0, c, d * 4);\n"
          "                _tile_loadd(1, c + 16, d * 4);\n"
          "                _tile_loadd(2, c + 16 * d, d * 4);\n"
          "                _tile_loadd(3, c + 16 * d + 16, d * 4);\n"
          "            }\n")
COMMON = {
    "now": now,
    "now again": now,
    "no dX products": replaced(now, "        if (acc) {\n            int64_t steps", "        if (0) {\n            int64_t steps"),
    "dX: accumulators not loaded": replaced(now, DX_ACC, "            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);\n"),
    "no dW step": replaced(now, "        if (dw)\n            vocab_weight_step(", "        if (0)\n            vocab_weight_step("),
    "dW: no products": replaced(now, WEIGHT_PRODUCTS, ""),
    "dW: no stream_block": replaced(now, "            stream_block(acc, dw + c * d + 16 * ct, d);\n", ""),
    "gradient copied, not formed": replaced(now, "            if (loss) {\n                loss_gradient_line(",
                                            "            if (0) {\n                loss_gradient_line("),
    "fwd: no statistics' exps": replaced(now, "    sum = _mm512_add_ps(sum, _mm512_add_ps(exp_nonpositive(_mm512_sub_ps(a, base)),\n"
                                              "                                           exp_nonpositive(_mm512_sub_ps(b, base))));\n",
                                         "    sum = _mm512_add_ps(sum, _mm512_add_ps(a, b));\n"),
    "fwd: no logits stored": replaced(now, "        if (((uintptr_t)dst & 63) == 0) _mm512_stream_si512((__m512i *)dst, line);\n"
                                           "        else _mm512_storeu_si512((void *)dst, line);\n", "        (void)dst;\n"),
    "fwd: no W16 stored": replaced(now, "        if (pairs) {\n            _mm512_stream_si512", "        if (0) {\n            _mm512_stream_si512"),
}
if VARIANTS == "before":
    WEIGHT_FORM = ("        for (int64_t r = 0; r < padded_n; r += 2)\n"
                   "            interleave_rows(s->g + r * VOCAB_STEP + c, s->g + (r + 1) * VOCAB_STEP + c, 32, s->pairs + r * 32);\n"
                   "        for (int64_t kt = 0; kt < 2 * k_tiles; kt++) /* columns c to c + 15, then c + 16 to c + 31 */\n"
                   "            transpose16(s->pairs + kt % k_tiles * 16 * 64 + 32 * (kt / k_tiles), 64, 16, s->tiles + kt * 512);\n")
    WEIGHT_TRANSPOSE = ("        for (int64_t kt = 0; kt < 2 * k_tiles; kt++) /* columns c to c + 15, then c + 16 to c + 31 */\n"
                        "            transpose16(s->pairs + kt % k_tiles * 16 * 64 + 32 * (kt / k_tiles), 64, 16, s->tiles + kt * 512);\n")
    variants = dict(COMMON)
    variants.update({
        "dW: no A tiles formed": replaced(now, WEIGHT_FORM, ""),
        "dW: no transpose16": replaced(now, WEIGHT_TRANSPOSE, ""),
        "no gather": replaced(now, "        vocab_gather(g, n, padded_n, v, vs, len, s->g, db ? db + vs : NULL, loss);\n", ""),
    })
else:
    variants = dict(COMMON)
    variants.update({
        "gather: no A tiles formed": replaced(now, "vocab_gather(g, n, padded_n, v, vs, len, s, dw != NULL,",
                                              "vocab_gather(g, n, padded_n, v, vs, len, s, 0,"),
        "no gather": replaced(now, "        vocab_gather(g, n, padded_n, v, vs, len, s, dw != NULL, db ? db + vs : NULL, loss);\n", ""),
        "gather: no db sums": replaced(now, "vocab_gather(g, n, padded_n, v, vs, len, s, dw != NULL, db ? db + vs : NULL, loss);",
                                       "vocab_gather(g, n, padded_n, v, vs, len, s, dw != NULL, NULL, loss);"),
        "gather: logits from cache (columns 0-255)": replaced(
            now, "loss_gradient_line(g + r * v + vs + j, vs + j,", "loss_gradient_line(g + r * v + j, vs + j,"),
        "gather: no prefetch 8 rows on": replaced(
            now, "            if (r + 8 < n) _mm_prefetch((const char *)(g + (r + 8) * v + vs + j), _MM_HINT_T0);\n", ""),
        "no fetch_ahead": replaced(now, "    for (int64_t end = a->next + count < a->total ? a->next + count : a->total; a->next < end; a->next++)\n"
                                        "        _mm_prefetch(a->base + a->next / a->per_row * a->stride + a->next % a->per_row * 64, _MM_HINT_T0);\n",
                                   "    (void)a, (void)count;\n"),
    })
libraries = build_libraries(variants)
torch.manual_seed(0)
n, v, d = 303, 32000, 256
x = torch.randn(n, d).bfloat16()
w, b = torch.randn(v, d) * 0.05, torch.randn(v) * 0.1
targets = torch.randint(0, v, (n,))
native._STATE["lib"] = libraries["now"]
pairs = native.vocab_pairs(w)
logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True, pairs=pairs)
loss = (targets, row_max, row_total, 1.0 / n)
backward = lambda: native.vocab_backward(logits, x, w, loss=loss, pairs=pairs)  # noqa: E731
forward = lambda: native.vocab_forward(x, w, b, statistics=True, pairs=pairs)  # noqa: E731
calls = {}
for name in variants:
    if not name.startswith("fwd:"):
        calls[f"backward, {name}"] = (name, backward)
for name in ("now", "now again", "fwd: no statistics' exps", "fwd: no logits stored", "fwd: no W16 stored"):
    calls[f"forward, {name}"] = (name, forward)
calls["forward, now, no statistics"] = ("now", lambda: native.vocab_forward(x, w, b, pairs=pairs))
calls["forward, now, no statistics, no W16"] = ("now", lambda: native.vocab_forward(x, w, b))
times = {name: [] for name in calls}
for r in range(ROUNDS + 1):
    for name, (library, call) in (calls.items() if r % 2 == 0 else list(calls.items())[::-1]):
        native._STATE["lib"] = libraries[library]
        start = time.perf_counter()
        for _ in range(CALLS):
            call()
        if r:
            times[name].append((time.perf_counter() - start) / CALLS)
print(f"ms a call, median and min of {ROUNDS} rounds of {CALLS} (the order reversed every other round); all rounds")
for name, t in times.items():
    print(f"  {name:45s} {statistics.median(t) * 1e3:7.2f} {min(t) * 1e3:7.2f}   " + " ".join(f"{x * 1e3:.2f}" for x in t))
