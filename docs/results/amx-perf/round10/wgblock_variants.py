"""Variants of native.c's weight-gradient product loop (xm_weight_grad) for this round's wgblock scripts, made by
replacing the loop's text in the working tree's native.c (so they bind with today's native.py).
Wrong on purpose (bounds, times only): "A in L1" (every step reads the block's first 8 T-tiles of dY's layout:
16 KB), "B in L1" (every step reads the column pair's first 8 T-tiles of X's pairs), "A,B in L1" (both).
Right: "tb<T>c<C>": the sum over T in blocks of T T-tiles (32 rows each); within a T-block the column pairs in
groups of C, the block's A part (2 T KB) read from L2 by the group's first pair and from L1 by the others; each
pair's accumulators zeroed at its first T-block, else tile-loaded from dW where the previous T-block stored them
(exact float32: the same bits)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "round9"))
from harness import replaced  # noqa: E402

LOOP = """                for (int64_t c = 0; c < w / 32; c++) {
                    const uint16_t *b0 = xp + 2 * c * t_tiles * 512, *b1 = b0 + t_tiles * 512;
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    for (int64_t tt = 0; tt < t_tiles; tt++)
                        block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);
"""
STEP = "                        block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);\n"
A_L1 = "                        block_step(ab + (tt & 7) * 512, ab + (t_tiles + (tt & 7)) * 512, 32, b0 + tt * 512, b1 + tt * 512);\n"
B_L1 = "                        block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + (tt & 7) * 512, b1 + (tt & 7) * 512);\n"
AB_L1 = ("                        block_step(ab + (tt & 7) * 512, ab + (t_tiles + (tt & 7)) * 512, 32, b0 + (tt & 7) * 512,"
         " b1 + (tt & 7) * 512);\n")

BLOCKED = """                int64_t pairs_w = w / 32;
                for (int64_t c0 = 0; c0 < pairs_w; c0 += WGRAD_GROUP) {
                    int64_t c1 = c0 + WGRAD_GROUP < pairs_w ? c0 + WGRAD_GROUP : pairs_w;
                    for (int64_t t0 = 0; t0 < t_tiles; t0 += WGRAD_T_TILES) {
                        int64_t t1 = t0 + WGRAD_T_TILES < t_tiles ? t0 + WGRAD_T_TILES : t_tiles;
                        for (int64_t c = c0; c < c1; c++) {
                            const uint16_t *b0 = xp + 2 * c * t_tiles * 512, *b1 = b0 + t_tiles * 512;
                            float *o = out + 32 * c;
                            if (t0 == 0) {
                                _tile_zero(0);
                                _tile_zero(1);
                                _tile_zero(2);
                                _tile_zero(3);
                            } else {
                                _tile_loadd(0, o, k * 4);
                                _tile_loadd(1, o + 16, k * 4);
                                _tile_loadd(2, o + 16 * k, k * 4);
                                _tile_loadd(3, o + 16 * k + 16, k * 4);
                            }
                            for (int64_t tt = t0; tt < t1; tt++)
                                block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);
                            _tile_stored(0, o, k * 4);
                            _tile_stored(1, o + 16, k * 4);
                            _tile_stored(2, o + 16 * k, k * 4);
                            _tile_stored(3, o + 16 * k + 16, k * 4);
                        }
                    }
                }
"""
BLOCKED_TAIL = """                            _tile_stored(3, o + 16 * k + 16, k * 4);
                        }
                    }
                }
"""
OLD_TAIL = """                    _tile_stored(0, out + 32 * c, k * 4);
                    _tile_stored(1, out + 32 * c + 16, k * 4);
                    _tile_stored(2, out + 16 * k + 32 * c, k * 4);
                    _tile_stored(3, out + 16 * k + 32 * c + 16, k * 4);
                }
"""


def bound(text: str, step: str) -> str:
    return replaced(text, STEP, step)


def blocked(text: str, t_tiles: int, group: int) -> str:
    """The T-blocked loop with WGRAD_T_TILES t_tiles and WGRAD_GROUP group."""
    text = replaced(text, LOOP + OLD_TAIL, BLOCKED)
    return replaced(text, "#define WGRAD_CHUNK_BYTES (1 << 20)\n",
                    f"#define WGRAD_CHUNK_BYTES (1 << 20)\n#define WGRAD_T_TILES {t_tiles}\n"
                    f"#define WGRAD_GROUP {group}\n")


def variants(text: str, specs=((8, 8), (4, 8), (8, 4), (16, 8), (16, 4))) -> dict:
    out = {"main": text, "main again": text, "A in L1": bound(text, A_L1), "B in L1": bound(text, B_L1),
           "A,B in L1": bound(text, AB_L1)}
    for tb, group in specs:
        out[f"tb{tb}c{group}"] = blocked(text, tb, group)
    return out


# "g<G>tb<T>": X's pairs reused across G of dY's column blocks: a thread takes groups of G blocks (the static
# schedule over groups), lays the G blocks out (kept across chunks as before), then for each column pair and each
# T-block of T T-tiles runs the G blocks in turn, so the pair's B part for the T-block (2 T KB) is read from L2 by
# the first block and from L1 by the others; each block's accumulators zeroed at the first T-block, else tile-loaded
# from dW where the previous T-block stored them (exact: the same bits).
BLOCKS = "        int threads = omp_get_num_threads(), blocks = k > width ? (n / 32 + threads - 1) / threads : 1;\n"
GROUP_BLOCKS = """        int threads = omp_get_num_threads();
        int64_t groups = (n / 32 + WGRAD_GROUP - 1) / WGRAD_GROUP;
        int64_t blocks = (k > width ? (groups + threads - 1) / threads : 1) * WGRAD_GROUP;
"""
NB_LOOP_HEAD = """            int64_t mine = 0; /* the thread's blocks so far in this chunk */
#pragma omp for schedule(static)
            for (int64_t nb = 0; nb < n / 32; nb++) {
                if (failed) continue;
                uint16_t *ab = a + (blocks > 1 ? mine++ : 0) * 32 * padded_t;
                if (blocks == 1 || k0 == 0)
                    weight_grad_columns(dy, ldy, t, t_tiles, nb, ab, pairs, db && k0 == 0 ? db + nb * 32 : NULL);
                float *out = dw + nb * 32 * k + k0;
"""
GROUP_LOOP = """            int64_t mine = 0; /* the thread's groups so far in this chunk */
#pragma omp for schedule(static)
            for (int64_t g = 0; g < groups; g++) {
                if (failed) continue;
                int64_t nb0 = g * WGRAD_GROUP, count = n / 32 - nb0 < WGRAD_GROUP ? n / 32 - nb0 : WGRAD_GROUP;
                uint16_t *ag = a + (blocks > WGRAD_GROUP ? mine++ : 0) * WGRAD_GROUP * 32 * padded_t;
                if (blocks == WGRAD_GROUP || k0 == 0)
                    for (int64_t j = 0; j < count; j++)
                        weight_grad_columns(dy, ldy, t, t_tiles, nb0 + j, ag + j * 32 * padded_t, pairs,
                                            db && k0 == 0 ? db + (nb0 + j) * 32 : NULL);
                for (int64_t c = 0; c < w / 32; c++) {
                    const uint16_t *b0 = xp + 2 * c * t_tiles * 512, *b1 = b0 + t_tiles * 512;
                    for (int64_t t0 = 0; t0 < t_tiles; t0 += WGRAD_T_TILES) {
                        int64_t t1 = t0 + WGRAD_T_TILES < t_tiles ? t0 + WGRAD_T_TILES : t_tiles;
                        for (int64_t j = 0; j < count; j++) {
                            const uint16_t *ab = ag + j * 32 * padded_t;
                            float *o = dw + (nb0 + j) * 32 * k + k0 + 32 * c;
                            if (t0 == 0) {
                                _tile_zero(0);
                                _tile_zero(1);
                                _tile_zero(2);
                                _tile_zero(3);
                            } else {
                                _tile_loadd(0, o, k * 4);
                                _tile_loadd(1, o + 16, k * 4);
                                _tile_loadd(2, o + 16 * k, k * 4);
                                _tile_loadd(3, o + 16 * k + 16, k * 4);
                            }
                            for (int64_t tt = t0; tt < t1; tt++)
                                block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);
                            _tile_stored(0, o, k * 4);
                            _tile_stored(1, o + 16, k * 4);
                            _tile_stored(2, o + 16 * k, k * 4);
                            _tile_stored(3, o + 16 * k + 16, k * 4);
                        }
                    }
                }
            }
"""


def grouped(text: str, group: int, t_tiles: int) -> str:
    text = replaced(text, BLOCKS, GROUP_BLOCKS)
    text = replaced(text, NB_LOOP_HEAD + LOOP + OLD_TAIL + "            }\n", GROUP_LOOP)
    return replaced(text, "#define WGRAD_CHUNK_BYTES (1 << 20)\n",
                    f"#define WGRAD_CHUNK_BYTES (1 << 20)\n#define WGRAD_T_TILES {t_tiles}\n"
                    f"#define WGRAD_GROUP {group}\n")


def group_variants(text: str, specs=((2, 8), (2, 4), (4, 4), (4, 8), (2, 16))) -> dict:
    out = {"main": text, "main again": text, "B in L1": bound(text, B_L1)}
    for group, tb in specs:
        out[f"g{group}tb{tb}"] = grouped(text, group, tb)
    return out


# Bounds of the grouped loop (wrong results, times only): "noreload" (the accumulators zeroed at every T-block, not
# loaded: no partial traffic), "nostore" (stored at the last T-block only, loaded never: neither), "A in L1" (each
# block reads its first T-block's A part at every T-block).
RELOAD = "                            if (t0 == 0) {\n"
GSTEP = "                                block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);\n"
GSTEP_A_L1 = ("                                block_step(ab + (tt - t0) * 512, ab + (t_tiles + tt - t0) * 512, 32, b0 + tt * 512,"
              " b1 + tt * 512);\n")
STORES = """                            _tile_stored(0, o, k * 4);
                            _tile_stored(1, o + 16, k * 4);
                            _tile_stored(2, o + 16 * k, k * 4);
                            _tile_stored(3, o + 16 * k + 16, k * 4);
"""


def grouped_bounds(text: str, group: int, tb: int) -> dict:
    right = grouped(text, group, tb)
    name = f"g{group}tb{tb}"
    return {name: right,
            f"{name} noreload": replaced(right, RELOAD, "                            if (1) {\n"),
            f"{name} nostore": replaced(replaced(right, RELOAD, "                            if (1) {\n"), STORES,
                                        "                            if (t1 == t_tiles) {\n" + STORES.replace(
                                            "                            _", "                                _") +
                                        "                            }\n"),
            f"{name} A in L1": replaced(right, GSTEP, GSTEP_A_L1)}


# Parts of main's call (wrong results, times only): "no products" (no column pair run), "no dY layout" (the blocks'
# layouts not written: stale), "no X layout" (the chunk's pairs not written: stale).
def part_variants(text: str) -> dict:
    return {"main": text, "main again": text,
            "no products": replaced(text, "for (int64_t c = 0; c < w / 32; c++) {", "for (int64_t c = 0; c < 0; c++) {"),
            "no dY layout": replaced(text, "                if (blocks == 1 || k0 == 0)\n                    weight_grad_columns(",
                                     "                if (0)\n                    weight_grad_columns("),
            "no X layout": replaced(text, "                pack_pair_rows(x + k0, ldx, t, t_tiles, w, 32 * tt, 32 * tt + 32, xp);",
                                    "                ;"),
            "B in L1": bound(text, B_L1)}


# "g<G>tb<T>buf": as g<G>tb<T>, the partial sums between T-blocks kept in a per-thread buffer (G x 32 x 32 float32,
# rows of 128 bytes, contiguous) instead of dW's rows (k * 4 bytes apart: 1-4 KB, the same few L1 sets), dW written
# at the last T-block only.
BUF_ALLOC = "        uint16_t *pairs = aligned_alloc(64, 16 * 64 * sizeof(uint16_t)); /* 32 rows of 32 columns in row pairs */\n"
BUF_ALLOC_NEW = BUF_ALLOC + "        float *partial = aligned_alloc(64, WGRAD_GROUP * 1024 * sizeof(float));\n"
PARTIAL_IO = """                            float *o = dw + (nb0 + j) * 32 * k + k0 + 32 * c;
                            if (t0 == 0) {
                                _tile_zero(0);
                                _tile_zero(1);
                                _tile_zero(2);
                                _tile_zero(3);
                            } else {
                                _tile_loadd(0, o, k * 4);
                                _tile_loadd(1, o + 16, k * 4);
                                _tile_loadd(2, o + 16 * k, k * 4);
                                _tile_loadd(3, o + 16 * k + 16, k * 4);
                            }
                            for (int64_t tt = t0; tt < t1; tt++)
                                block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);
                            _tile_stored(0, o, k * 4);
                            _tile_stored(1, o + 16, k * 4);
                            _tile_stored(2, o + 16 * k, k * 4);
                            _tile_stored(3, o + 16 * k + 16, k * 4);
"""
PARTIAL_BUF = """                            float *o = dw + (nb0 + j) * 32 * k + k0 + 32 * c, *p = partial + j * 1024;
                            if (t0 == 0) {
                                _tile_zero(0);
                                _tile_zero(1);
                                _tile_zero(2);
                                _tile_zero(3);
                            } else {
                                _tile_loadd(0, p, 128);
                                _tile_loadd(1, p + 16, 128);
                                _tile_loadd(2, p + 512, 128);
                                _tile_loadd(3, p + 528, 128);
                            }
                            for (int64_t tt = t0; tt < t1; tt++)
                                block_step(ab + tt * 512, ab + (t_tiles + tt) * 512, 32, b0 + tt * 512, b1 + tt * 512);
                            if (t1 < t_tiles) {
                                _tile_stored(0, p, 128);
                                _tile_stored(1, p + 16, 128);
                                _tile_stored(2, p + 512, 128);
                                _tile_stored(3, p + 528, 128);
                            } else {
                                _tile_stored(0, o, k * 4);
                                _tile_stored(1, o + 16, k * 4);
                                _tile_stored(2, o + 16 * k, k * 4);
                                _tile_stored(3, o + 16 * k + 16, k * 4);
                            }
"""


def grouped_buffer(text: str, group: int, t_tiles: int) -> str:
    text = grouped(text, group, t_tiles)
    text = replaced(text, BUF_ALLOC, BUF_ALLOC_NEW)
    text = replaced(text, "        failed = !st || !a || !pairs;\n", "        failed = !st || !a || !pairs || !partial;\n")
    text = replaced(text, "        free(pairs);\n        end(st);\n", "        free(pairs);\n        free(partial);\n        end(st);\n")
    return replaced(text, PARTIAL_IO, PARTIAL_BUF)


def buffer_variants(text: str, specs=((2, 8), (4, 8), (4, 4), (8, 4), (4, 16))) -> dict:
    out = {"main": text, "main again": text, "B in L1": bound(text, B_L1)}
    for group, tb in specs:
        out[f"g{group}tb{tb}buf"] = grouped_buffer(text, group, tb)
    return out


# Does the B-in-L1 bound's gain depend on the dY layout's traffic? (wrong results, times only)
def churn_variants(text: str) -> dict:
    parts = part_variants(text)
    no_dy = parts["no dY layout"]
    return {"main": text, "main again": text, "B in L1": parts["B in L1"], "A in L1": bound(text, A_L1),
            "no dY layout": no_dy, "no dY, B in L1": bound(no_dy, B_L1), "no dY, A in L1": bound(no_dy, A_L1),
            "no dY, A,B in L1": bound(no_dy, AB_L1), "g4tb64": grouped(text, 4, 64),
            "no dY, g4tb64": replaced(grouped(text, 4, 64), "                if (blocks == WGRAD_GROUP || k0 == 0)\n",
                                      "                if (0)\n")}


# Right: main with WGRAD_CHUNK_BYTES other than 1 MB ("chunk<KB>"), and "g4tb64 chunk<KB>".
def chunk_variants(text: str, sizes=(256, 512, 2048)) -> dict:
    out = {"main": text, "main again": text}
    for kb in sizes:
        out[f"chunk{kb}"] = replaced(text, "#define WGRAD_CHUNK_BYTES (1 << 20)\n", f"#define WGRAD_CHUNK_BYTES ({kb} << 10)\n")
    return out


def overlap(text: str) -> str:
    """Right: wgblock-overlap-layout.diff applied to `text` (native.c at 26ffb5a): each thread takes its blocks as a
    static split and lays the next block out T-tile by T-tile among this block's products (one T-tile every w / 32
    steps, two blocks' room used in turn), the first block before them."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "native.c"
        path.write_text(text)
        subprocess.run(["patch", "-s", str(path), str(Path(__file__).parent / "wgblock-overlap-layout.diff")],
                       check=True)
        return path.read_text()
