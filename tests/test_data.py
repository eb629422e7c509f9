"""Tests for xmodlm.data: corpus discovery and streaming reads (bad lines reported with file:line), alpha sampling,
packing, masking rates, per-language and mixed batches, determinism, exact resume, rank slicing, validation split."""
from __future__ import annotations

import gzip
import json
import logging
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # the package need not be installed
import xmodlm.data  # noqa: E402
from xmodlm.data import (CorpusReport, MLMBatches, count_lines, discover_corpora, encode_lines,  # noqa: E402
                         mask_tokens, read_lines, sampling_probs, validation_batches)
from xmodlm.tokenizer import mask_id, train_tokenizer  # noqa: E402

NTREX = Path(__file__).resolve().parents[2] / "shared" / "data" / "ntrex"
ALPHABETS = {"aa_XX": "abcdefg", "bb_XX": "hijklmn", "cc_XX": "абвгдеж"}
SIZES = {"aa_XX": 400, "bb_XX": 60, "cc_XX": 12}
LANGS = list(SIZES)


def synthetic_lines(code: str, n: int, seed: int = 0) -> list[str]:
    """Random words over the language's own alphabet, so a token tells its language."""
    rnd = random.Random(f"{code}-{seed}")
    letters = ALPHABETS[code]
    return [" ".join("".join(rnd.choices(letters, k=rnd.randint(1, 6))) for _ in range(rnd.randint(2, 9)))
            for _ in range(n)]


def write_corpus(directory: Path, sizes: dict[str, int], gz: bool = False) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for code, n in sizes.items():
        data = ("\n".join(synthetic_lines(code, n)) + "\n").encode()
        out[code] = directory / f"{code}.txt{'.gz' if gz else ''}"
        out[code].write_bytes(gzip.compress(data) if gz else data)
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), SIZES)


@pytest.fixture(scope="module")
def tok(corpora):
    return train_tokenizer(corpora, 100, sample_sentences=500, progress=False)


def language_of_token(tok) -> dict[int, str]:
    """Token id -> language, for pieces whose letters belong to one synthetic alphabet."""
    out = {}
    for piece, i in tok.get_vocab().items():
        letters = set(piece.replace("▁", ""))
        for code, alphabet in ALPHABETS.items():
            if letters and letters <= set(alphabet):
                out[i] = code
    return out


def unmasked(batch) -> torch.Tensor:
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


# ---------------------------------------------------------------------------------------------------- reading

def test_discover_corpora(tmp_path):
    (tmp_path / "fr_XX.txt").write_text("a\n")
    (tmp_path / "de_DE.txt.gz").write_bytes(gzip.compress(b"b\n"))
    (tmp_path / "README.md").write_text("not a corpus")
    assert list(discover_corpora(tmp_path)) == ["de_DE", "fr_XX"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty)):
        discover_corpora(empty)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_corpora(tmp_path / "nowhere")


def test_count_lines(tmp_path):
    cases = {"a.txt": b"x\ny\n", "b.txt": b"x\ny", "c.txt": b"", "d.txt": b"\n\n\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "e.txt.gz").write_bytes(gzip.compress(b"x\ny\nz"))
    assert [count_lines(tmp_path / n) for n in [*cases, "e.txt.gz"]] == [2, 2, 0, 3, 3]


def test_bad_utf8_and_empty_lines_are_reported_and_skipped(tmp_path, caplog):
    path = tmp_path / "xx.txt"
    path.write_bytes(b"good one\nbad \xff\xfe byte\ngood two\n   \n\ngood three")
    report = CorpusReport()
    with caplog.at_level(logging.WARNING, logger="xmodlm.data"):
        got = list(read_lines(path, report=report))
    assert [(i, text) for i, _, text in got] == [(0, "good one"), (2, "good two"), (5, "good three")]
    assert report.counts[str(path)] == 3
    assert f"{path}:2: invalid UTF-8" in caplog.text
    assert f"{path}:4: empty line" in caplog.text and f"{path}:5: empty line" in caplog.text
    assert report.issues[0].startswith(f"{path}:2:")
    # The byte offsets let a reader resume mid-file.
    assert [text for _, _, text in read_lines(path, 2, offset=got[1][1])] == ["good two", "good three"]


def test_missing_and_unreadable_files_are_named(tmp_path, tok):
    missing = tmp_path / "xx_XX.txt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        MLMBatches({"xx_XX": missing}, tok, ["xx_XX"], seq_len=16, batch_size=2)
    broken = tmp_path / "yy_YY.txt.gz"
    broken.write_bytes(gzip.compress(b"a line\n" * 1000)[:40])
    with pytest.raises(OSError, match=str(broken)):
        MLMBatches({"yy_YY": broken}, tok, ["yy_YY"], seq_len=16, batch_size=2)
    with pytest.raises(KeyError, match="zz_ZZ"):
        MLMBatches({"yy_YY": broken}, tok, ["zz_ZZ"], seq_len=16, batch_size=2)


def test_unusable_corpus_is_an_error(tmp_path, tok):
    path = tmp_path / "xx.txt"
    path.write_bytes(b"\n \n\xff\n")
    batches = MLMBatches({"xx": path}, tok, ["xx"], seq_len=16, batch_size=2)
    with pytest.raises(ValueError, match="none of its 3 training lines"):
        next(batches)


# ---------------------------------------------------------------------------------------------------- sampling

def test_sampling_probs():
    n = np.array([1000, 100, 10])
    np.testing.assert_allclose(sampling_probs(n, 0.3), n**0.3 / (n**0.3).sum())
    np.testing.assert_allclose(sampling_probs(n, 1.0), n / n.sum())
    np.testing.assert_allclose(sampling_probs(n, 0.0), [1 / 3] * 3)
    with pytest.raises(ValueError):
        sampling_probs([10, 0], 0.3)


@pytest.mark.parametrize("mode", ["per_language", "mixed"])
def test_language_frequencies_follow_alpha(corpora, tok, mode):
    """Empirical language frequencies over many draws match p_l ~ n_l^alpha (n_l = training lines)."""
    steps, batch_size = (1500, 1) if mode == "per_language" else (100, 16)
    batches = MLMBatches(corpora, tok, LANGS, seq_len=8, batch_size=batch_size, mode=mode, alpha=0.5, seed=3)
    counts = Counter(torch.cat([b["lang_ids"] for b in take(batches, steps)]).tolist())
    n = steps * batch_size
    p = sampling_probs(list(SIZES.values()), 0.5)
    for lang_id, pl in enumerate(p):
        assert abs(counts[lang_id] - n * pl) < 4 * np.sqrt(n * pl * (1 - pl)), (lang_id, counts, p)


# ---------------------------------------------------------------------------------------------------- masking

def test_mask_tokens_rates_and_specials():
    vocab, mask = 1000, 999
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab - 1, (256, 512), generator=g)
    special = torch.rand(ids.shape, generator=g) < 0.1
    ids[special] = 2
    inputs, labels = mask_tokens(ids, special, mask, vocab, g, mask_prob=0.15)
    chosen = labels != -100
    assert not chosen[special].any() and torch.equal(inputs[special], ids[special])
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    rate = chosen.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.005
    n = chosen.sum().item()
    to_mask = (inputs[chosen] == mask).sum().item() / n
    kept = (inputs[chosen] == ids[chosen]).sum().item() / n
    randomised = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(randomised - 0.1) < 0.01
    replaced = inputs[chosen & (inputs != mask) & (inputs != ids)]
    assert replaced.min() >= 4 and replaced.max() < vocab and not (replaced == mask).any()


def test_batches_never_mask_special_tokens(corpora, tok):
    special_ids = torch.tensor([0, 1, 2, mask_id(tok)])
    for b in take(MLMBatches(corpora, tok, LANGS, seq_len=32, batch_size=8, mode="mixed"), 20):
        original = unmasked(b)
        assert not (b["labels"] != -100)[torch.isin(original, special_ids)].any()
    rate = torch.cat([(b["labels"] != -100).float().flatten() for b in take(
        MLMBatches(corpora, tok, LANGS, seq_len=64, batch_size=16), 30)]).mean().item()
    assert 0.09 < rate < 0.15  # 15% of the non-special tokens; </s> separators and <s> are never chosen


# ---------------------------------------------------------------------------------------------------- packing

@pytest.mark.parametrize("cache", [True, False])
def test_packing_rows_full_and_stream_in_order(tmp_path, tok, cache, monkeypatch):
    """Rows are <s> + the next seq_len-2 tokens of the stream (lines in order, each ended by </s>) + </s>; no
    padding; the held-out tail never appears; the stream wraps around at the end of the training lines."""
    corpora = write_corpus(tmp_path, {"bb_XX": 30})
    lines = corpora["bb_XX"].read_text(encoding="utf-8").splitlines()
    skip, seq_len = 10, 24
    batches = MLMBatches(corpora, tok, ["bb_XX"], seq_len=seq_len, batch_size=3, skip_lines=skip, chunk_lines=7,
                         epoch_cache_tokens=1 << 20 if cache else 0)
    rows = torch.cat([unmasked(b) for b in take(batches, 40)])
    assert (rows[:, 0] == 0).all() and (rows[:, -1] == 2).all()
    assert not (rows == 1).any()
    assert all((b["attention_mask"] == 1).all() for b in take(batches, 3))
    stream = encode_lines(tok, lines[:-skip], eos_id=2)[0]
    got = rows[:, 1:-1].flatten().numpy()
    epochs = len(got) // len(stream) + 1
    assert epochs >= 3
    np.testing.assert_array_equal(got, np.tile(stream, epochs)[: len(got)])
    assert batches.epochs()["bb_XX"] > 3
    encoded = Counter()
    monkeypatch.setattr(xmodlm.data, "encode_lines",
                        lambda tok, lines, eos_id: encoded.update(lines) or encode_lines(tok, lines, eos_id))
    take(batches, 40)
    assert (sum(encoded.values()) == 0) == cache  # the epoch cache replays; streaming re-encodes


def test_per_language_batches_hold_one_language(corpora, tok):
    lang_of = language_of_token(tok)
    for b in take(MLMBatches(corpora, tok, LANGS, seq_len=32, batch_size=4), 30):
        assert b["lang_ids"].unique().numel() == 1
        code = LANGS[b["lang_ids"][0]]
        seen = {lang_of[t] for t in unmasked(b).flatten().tolist() if t in lang_of}
        assert seen == {code}


def test_mixed_rows_follow_their_language(corpora, tok):
    lang_of = language_of_token(tok)
    batches = take(MLMBatches(corpora, tok, LANGS, seq_len=32, batch_size=8, mode="mixed", alpha=0.0), 10)
    assert any(b["lang_ids"].unique().numel() > 1 for b in batches)
    for b in batches:
        for row, lang in zip(unmasked(b), b["lang_ids"]):
            assert {lang_of[t] for t in row.tolist() if t in lang_of} == {LANGS[lang]}


def test_shapes_and_dtypes(corpora, tok):
    b = next(MLMBatches(corpora, tok, LANGS, seq_len=16, batch_size=4))
    assert {k: (tuple(v.shape), v.dtype) for k, v in b.items()} == {
        "input_ids": ((4, 16), torch.long), "attention_mask": ((4, 16), torch.long),
        "labels": ((4, 16), torch.long), "lang_ids": ((4,), torch.long)}


# ---------------------------------------------------------------------------------------------------- determinism

def test_same_seed_same_batches(corpora, tok):
    def run(seed):
        return take(MLMBatches(corpora, tok, LANGS, seq_len=16, batch_size=4, mode="mixed", seed=seed), 12)
    assert_same(run(5), run(5))
    assert not all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(run(5), run(6)))


@pytest.mark.parametrize("mode", ["per_language", "mixed"])
@pytest.mark.parametrize("gz,cache", [(False, True), (True, True), (False, False)])
def test_exact_resume(tmp_path, tok, mode, gz, cache):
    """k batches, state -> JSON -> a NEW object: the following batches equal an uninterrupted run's, across
    chunk refills and epoch wrap-arounds (small corpus, small chunks), streamed or replayed from the epoch cache."""
    corpora = write_corpus(tmp_path, {"aa_XX": 40, "bb_XX": 25, "cc_XX": 9}, gz=gz)

    def make():
        return MLMBatches(corpora, tok, LANGS, seq_len=20, batch_size=4, mode=mode, seed=11, skip_lines=3,
                          chunk_lines=5, epoch_cache_tokens=10_000 if cache else 0)
    reference = take(make(), 60)
    for k in (0, 1, 7, 23, 41):
        first = make()
        take(first, k)
        state = json.loads(json.dumps(first.state_dict()))
        resumed = make()
        resumed.load_state_dict(state)
        assert_same(take(resumed, 60 - k), reference[k:])
    assert make().epochs()["cc_XX"] == 0


def test_resume_from_callable_source(tok):
    lines = synthetic_lines("aa_XX", 30)

    def make():
        return MLMBatches({"aa_XX": lambda: iter(lines)}, tok, ["aa_XX"], seq_len=16, batch_size=2, chunk_lines=4)
    reference = take(make(), 25)
    first = make()
    take(first, 9)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert_same(take(resumed, 16), reference[9:])


def test_resume_refuses_other_settings(corpora, tok):
    state = MLMBatches(corpora, tok, LANGS, seq_len=16, batch_size=4, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        MLMBatches(corpora, tok, LANGS, seq_len=16, batch_size=4, seed=2).load_state_dict(state)


def test_ranks_split_the_global_batch(corpora, tok):
    """Every rank computes the global batch and keeps rows rank::world_size: together they are the 1-process batch."""
    def make(rank, world):
        return MLMBatches(corpora, tok, LANGS, seq_len=16, batch_size=6, mode="mixed", rank=rank, world_size=world)
    single = take(make(0, 1), 5)
    parts = [take(make(r, 3), 5) for r in range(3)]
    for step, full in enumerate(single):
        for key, value in full.items():
            merged = torch.empty_like(value)
            for r in range(3):
                merged[r::3] = parts[r][step][key]
            assert torch.equal(merged, value), key
    with pytest.raises(ValueError, match="world_size"):
        make(0, 4)


# ---------------------------------------------------------------------------------------------------- validation

def test_validation_is_the_last_lines(corpora, tok):
    valid = 8
    out = validation_batches(corpora, tok, LANGS, seq_len=16, batch_size=4, valid_lines=valid, seed=0)
    assert list(out) == LANGS
    for lang_id, code in enumerate(LANGS):
        lines = corpora[code].read_text(encoding="utf-8").splitlines()
        rows = torch.cat([unmasked(b) for b in out[code]])
        attention = torch.cat([b["attention_mask"] for b in out[code]])
        assert all((b["lang_ids"] == lang_id).all() for b in out[code])
        assert (rows[:, 0] == 0).all() and (attention[:-1] == 1).all()
        body = torch.cat([torch.cat([r[1:-1] for r in rows[:-1]]), rows[-1][1:attention[-1].sum() - 1]])
        expected = encode_lines(tok, lines[-valid:], eos_id=2)[0][:-1]
        np.testing.assert_array_equal(body.numpy(), expected)
        assert (rows[-1][attention[-1] == 0] == 1).all()  # padding after the last row's </s>
        assert all((b["labels"][b["attention_mask"] == 0] == -100).all() for b in out[code])
    again = validation_batches(corpora, tok, LANGS, seq_len=16, batch_size=4, valid_lines=valid, seed=0)
    for code in LANGS:
        assert_same(out[code], again[code])
    capped = validation_batches(corpora, tok, LANGS[:1], seq_len=16, batch_size=4, valid_lines=valid, max_batches=1)
    assert len(capped["aa_XX"]) == 1
    assert_same(capped["aa_XX"], out["aa_XX"][:1])


def test_validation_needs_training_lines(corpora, tok):
    with pytest.raises(ValueError, match="cc_XX"):
        validation_batches(corpora, tok, LANGS, seq_len=16, batch_size=4, valid_lines=SIZES["cc_XX"])


# ---------------------------------------------------------------------------------------------------- real text

@pytest.mark.skipif(not NTREX.is_dir(), reason=f"real corpus {NTREX} absent (see shared/data/README.md)")
def test_ntrex_end_to_end():
    """A tiny tokenizer on three NTREX languages, training batches without the last 200 lines, validation on them."""
    corpora = discover_corpora(NTREX)
    langs = ["en_XX", "fi_FI", "sw_KE"]
    tok = train_tokenizer({c: corpora[c] for c in langs}, 300, sample_sentences=600, progress=False,
                          skip_lines=200)
    batches = MLMBatches(corpora, tok, langs, seq_len=64, batch_size=8, skip_lines=200)
    for b in take(batches, 5):
        assert b["input_ids"].shape == (8, 64) and (b["attention_mask"] == 1).all()
    assert batches.line_counts == [1797] * 3
    valid = validation_batches(corpora, tok, langs, seq_len=64, batch_size=8, valid_lines=200, max_batches=2)
    assert [len(v) for v in valid.values()] == [2, 2, 2]
