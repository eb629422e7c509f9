"""Where the training attention kernels' time goes (xm_attention_train, xm_attention_train_backward), as round 8 left
them (native.c with its training attention section as of 3cfeab4, which round 9 measured before changing it; every
other section today's): as built against copies with one part removed (wrong results; only their times count), at
the bench's training step's shape (attention_harness.py: batch 16, 4 heads, T 128, d 64, q k v heads of one fused
projection, the dropout's keep mask, no key mask), one thread, the variants alternating round by round in one process.
Each round: 10 forwards, then 10 backwards per variant; medians (and minima) of 15 rounds, ms per call; "saved": the
median's drop against as built. The variants without the score products leave the softmax working on stale buffers
(zeroed once at allocation) and came out slower, not faster, in the forward: their figures are no measure of the
products. Usage, pinned:
taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round9/training_attention_parts.py"""

import sys
from pathlib import Path

import torch

import xmodlm
from xmodlm.kernels import native

sys.path.insert(0, str(Path(__file__).parent))
from harness import (ATTENTION, build, inputs, old_source, replaced, report, time_calls,  # noqa: E402
                     with_attention_of)

xmodlm.tune_allocator()
torch.set_num_threads(1)
HEAD, TAIL = ATTENTION
text = with_attention_of(native.SOURCE.read_text(), old_source("3cfeab4"))
I12, I16 = "\n" + " " * 12, "\n" + " " * 16


start, end = text.index(HEAD), text.index(TAIL)


def without(*cuts) -> str:
    """native.c with each (old, new[, count]) replacement made in the training attention's section only."""
    section = text[start:end]
    for cut in cuts:
        section = replaced(section, *cut)
    return text[:start] + section + text[end:]


# Without the score products the score buffers would hold whatever the allocator left there (NaNs, denormals: a
# slower softmax): those variants zero them once at allocation.
ZEROED = (("else memset(scratch.probs, 0, 16 * padded_t * 2);",
           "else { memset(scratch.probs, 0, 16 * padded_t * 2); memset(scratch.scores, 0, 2 * 16 * padded_t * 4); }"),
          ("else { /* the queries past", "else { memset(p, 0, 16 * padded_t * 4); memset(dpd, 0, 16 * padded_t * 4);"
           " /* the queries past"))
SCORES = (("score_pair(qrows, qstride, kp, kt, d_tiles, scores, padded_t);", ""),
          ("score_pair(qrows, qstride, kt_pack, kt, d_tiles, p, padded_t);", ""),
          ("score_pair(grows, gstride, vt_pack, kt, d_tiles, dpd, padded_t);", ""))
variants = {"as built": text}
variants["layouts: pack_transposed (k; k, v)"] = without(
    (I12 + "pack_transposed(kh, st, t, padded_t, d, kp);", ""),
    (I12 + "pack_transposed(kh, st, t, padded_t, d, kt_pack);" + I12
     + "pack_transposed(vh, st, t, padded_t, d, vt_pack);", ""))
variants["layouts: pack_pairs (v; k, q, dout)"] = without(
    (I12 + "pack_pairs(vh, st, t, padded_t, d, vp);", ""),
    (I12 + "pack_pairs(kh, st, t, padded_t, d, k_pairs);" + I12 + "pack_pairs(qh, st, t, padded_t, d, q_pairs);"
     + I12 + "pack_pairs(gq, gt, t, padded_t, d, g_pairs);", ""))
variants["exponentials / probabilities"] = without(
    ("exponentials(row, live, padded_t, c, shift + r, inverse + r);", "shift[r] = 0.0f; inverse[r] = 1.0f / 128;"),
    ("probabilities(p + i * padded_t, live, padded_t, c, shift[r], inverse[r]);", ""))
variants["dropped_row (forward)"] = without(
    ("dropped_row(row, inverse[r], keep ? keep + r * t : NULL, t, padded_t, drop_scale,\n"
     "                                probs + i * padded_t);", ""))
variants["score_gradient_row (backward)"] = without(
    ("score_gradient_row(p + i * padded_t, dpd + i * padded_t, keep ? keep + r * t : NULL, t,\n"
     "                                           padded_t, drop_scale, pd + i * padded_t, ds + i * padded_t);", ""))
variants["pair_rows + transposed_tiles (backward)"] = without(
    (I16 + "pair_rows(pd, padded_t, pd_pairs + q0 * padded_t);" + I16
     + "pair_rows(ds, padded_t, ds_pairs + q0 * padded_t);", ""),
    (I16 + "transposed_tiles(ds_pairs, padded_t, kb, tiles);", ""),
    (I16 + "transposed_tiles(pd_pairs, padded_t, kb, tiles);", ""))
variants["products: scores (S; S, dPd)"] = without(*ZEROED, *SCORES)
variants["products: Pd v (forward), dQ (backward)"] = without(
    ("rows_by_pairs(probs, padded_t, 32, vp, padded_t / 32, d, o);", ""),
    ("rows_by_pairs(ds, padded_t, 32, k_pairs, padded_t / 32, d, o);", ""))
variants["products: dK, dV (backward)"] = without(
    ("rows_by_pairs(tiles, 32, 512, q_pairs, padded_t / 32, d, o);", ""),
    ("rows_by_pairs(tiles, 32, 512, g_pairs, padded_t / 32, d, o);", ""))
variants["store_rows"] = without(
    ("store_rows(o, 1.0f, valid, d, out + ((b * t + q0) * heads + h) * d, heads * d);", ""),
    ("store_rows(o, scale, valid, d, dq + out_offset + q0 * dt, dt);", ""),
    ("store_rows(o, scale, valid, d, dk + out_offset + 16 * kb * dt, dt);", ""),
    ("store_rows(o, 1.0f, valid, d, dv + out_offset + 16 * kb * dt, dt);", ""))
variants["all products (only the vector work left)"] = without(
    *ZEROED, *SCORES,
    ("rows_by_pairs(probs, padded_t, 32, vp, padded_t / 32, d, o);", ""),
    ("rows_by_pairs(ds, padded_t, 32, k_pairs, padded_t / 32, d, o);", ""),
    ("rows_by_pairs(tiles, 32, 512, q_pairs, padded_t / 32, d, o);", ""),
    ("rows_by_pairs(tiles, 32, 512, g_pairs, padded_t / 32, d, o);", ""))

libraries = build(variants)
args = inputs(libraries["as built"])
times = time_calls(libraries, rounds=15, calls=10, args=args)
print(f"{torch.get_num_threads()} thread(s); batch 16, 4 heads, T 128, d 64, dropout keep mask, no key mask; "
      "ms per call (medians of 15 rounds of 10 calls, minima), variants alternating:")
report(times, "as built")
