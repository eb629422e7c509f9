"""xmodlm.vocab: vocabulary extension keeps every old tokenisation (synthetic corpora; NTREX and the bible corpora
when ../shared/data exists), appended rows leave old logits and old languages' MLM losses bit-identical (ours; the
old rows' logits in transformers too), training a subset of rows leaves the others bit-identical, counts are exact
under resume, the row initialisations, and scoring per character."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import LANGS, ours
from xmodlm import vocab as V
from xmodlm.data import MLMBatches, read_lines
from xmodlm.tokenizer import MASK, UNK_ID, load_tokenizer, mask_id, save_tokenizer, train_tokenizer
from xmodlm.trainer import Trainer, TrainConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ALPHABETS = {"aa_XX": "abcdefgé", "bb_XX": "hijklmnab", "cc_XX": "абвгдежa", "nn_XX": "ܐܒܓܕܗܘabc", "ll_XX": "abcdɛɔ"}


def write_corpus(directory: Path, codes, n=150, seed=0) -> dict[str, Path]:
    rnd = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for code in codes:
        letters = ALPHABETS[code]
        lines = [" ".join("".join(rnd.choices(letters, k=rnd.randint(1, 6))) for _ in range(rnd.randint(3, 10)))
                 + rnd.choice([".", "!", ","]) for _ in range(n)]
        out[code] = directory / f"{code}.txt"
        out[code].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), list(ALPHABETS))


@pytest.fixture(scope="module")
def old_tok(corpora):
    return train_tokenizer({c: corpora[c] for c in ("aa_XX", "bb_XX", "cc_XX")}, 150, progress=False)


def lines_of(path, limit=None):
    return [text for _, _, text in read_lines(path, 0, limit)]


def assert_same_where_no_unk(old, new, lines):
    """Every word the old tokenizer encodes without <unk> keeps its ids; lines without <unk> are identical."""
    changed = 0
    fast = [(a.ids, b.ids) for a, b in zip(old.encode_batch_fast(lines, add_special_tokens=False),
                                           new.encode_batch_fast(lines, add_special_tokens=False))]
    for line, (x, y) in zip(lines, fast):
        if x == y:
            continue
        assert UNK_ID in x
        changed += 1
        a, b = old.encode(line, add_special_tokens=False), new.encode(line, add_special_tokens=False)
        for w in {w for w in a.word_ids if w is not None}:
            word = [i for i, k in zip(a.ids, a.word_ids) if k == w]
            if UNK_ID not in word:
                assert word == [i for i, k in zip(b.ids, b.word_ids) if k == w]
    return changed


def test_extension_appends_after_mask_and_keeps_old_tokenisation(old_tok, corpora, tmp_path):
    new_lines = lines_of(corpora["nn_XX"])
    assert set(V.new_characters(old_tok, new_lines)) == set("ܐܒܓܕܗܘ")
    ext = V.extend_tokenizer(old_tok, new_lines, budget=60)
    tok = ext.tokenizer
    n = old_tok.get_vocab_size()
    assert ext.first_id == n and tok.get_vocab_size() == n + len(ext.pieces) and mask_id(tok) == n - 1
    assert all(any(c in "ܐܒܓܕܗܘ" for c in p) for p in ext.pieces) and set("ܐܒܓܕܗܘ") <= set(ext.pieces)
    assert all(old_tok.id_to_token(i) == tok.id_to_token(i) for i in range(n))
    for code in ("aa_XX", "bb_XX", "cc_XX"):  # every old language's corpus: the same ids, line for line
        lines = lines_of(corpora[code])
        assert [e.ids for e in old_tok.encode_batch(lines)] == [e.ids for e in tok.encode_batch(lines)]
    assert V.unk_rate(old_tok, new_lines)[0] > 0 and V.unk_rate(tok, new_lines)[0] == 0
    mixed = ["abc ܐܒc ab<mask>c é ɛ", "ܐ", "<mask> ܓܕ"]
    assert tok.encode(mixed[2]).ids[1] == n - 1  # <mask> is still the added token
    assert_same_where_no_unk(old_tok, tok, mixed)
    save_tokenizer(tok, tmp_path)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf) == tok.get_vocab_size()
    for text in [*mixed, *new_lines[:20]]:
        assert hf(text)["input_ids"] == tok.encode(text).ids
    assert load_tokenizer(tmp_path).to_str() == tok.to_str()


def test_no_new_characters_means_no_extension(old_tok, corpora):
    ext = V.extend_tokenizer(old_tok, lines_of(corpora["bb_XX"]), budget=60)
    assert ext.tokenizer is old_tok and ext.pieces == [] and not ext.new_chars
    assert V.extend_tokenizer(old_tok, lines_of(corpora["nn_XX"]), budget=0).pieces == []


def test_new_latin_letters_only_change_words_that_were_unk(old_tok, corpora):
    ext = V.extend_tokenizer(old_tok, lines_of(corpora["ll_XX"]), budget=40)
    assert set(ext.new_chars) == {"ɛ", "ɔ"}
    assert V.piece_script("▁ɛa") == "LATIN" and V.char_script("ܐ") == "SYRIAC" and V.char_script(".") == "COMMON"
    assert assert_same_where_no_unk(old_tok, ext.tokenizer, ["aɛb cd", "ɔ abc ɛɛ", "abc def"]) >= 1


def _real_corpora():
    out = []
    bible, ntrex = SHARED / "bible", SHARED / "ntrex"
    if bible.is_dir():
        out.append(pytest.param(bible, ["swh_Latn", "est_Latn", "cak_Latn"], "syr_Syrc", id="bible"))
    if ntrex.is_dir():
        out.append(pytest.param(ntrex, ["en_XX", "de_DE", "fi_FI"], "ru_RU", id="ntrex"))
    return out or [pytest.param(None, None, None, marks=pytest.mark.skip(reason=f"no real corpora in {SHARED}"))]


@pytest.mark.parametrize("directory,old,new", _real_corpora())
def test_real_corpora_keep_their_tokenisation(directory, old, new):
    """Every line the old vocabulary encodes without <unk> keeps its ids, and in the others every word without <unk>
    (a character beyond the tokenizer's coverage, which the new language may bring): on the tokenizer's own
    languages, every line; on every other corpus there, 200 lines."""
    files = {p.name.split(".")[0]: p for p in sorted(directory.glob("*.txt"))}
    tok = train_tokenizer({c: files[c] for c in old}, 800, sample_sentences=1500, progress=False)
    new_lines = lines_of(files[new], 1000)
    ext = V.extend_tokenizer(tok, new_lines, budget=300)
    assert len(ext.pieces) > 50 and V.unk_rate(ext.tokenizer, new_lines)[0] == 0
    for code in old:  # the tokenizer's own languages, every line: lines without <unk> (nearly all) keep their ids
        lines = lines_of(files[code])
        unk = sum(UNK_ID in e.ids for e in tok.encode_batch_fast(lines))
        assert unk < 0.1 * len(lines), code
        assert assert_same_where_no_unk(tok, ext.tokenizer, lines) <= unk, code
    for code, path in files.items():
        if code not in old and code != new:
            assert_same_where_no_unk(tok, ext.tokenizer, lines_of(path, 200))


def test_appended_rows_leave_old_logits_bit_identical_also_in_transformers(tmp_path):
    model = ours()
    ids = torch.randint(4, 100, (3, 9))
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.5, ids, -100)
    with torch.no_grad():
        before = model(ids, lang_ids="de_DE").logits
        before_loss = model(ids, lang_ids="de_DE", labels=labels).loss
        V.resize_vocabulary(model, torch.randn(7, 32), torch.randn(7))
        after = model(ids, lang_ids="de_DE").logits
    assert model.config.vocab_size == 107 and after.shape[-1] == 107
    assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
    assert model.lm_head.decoder.bias is model.lm_head.bias
    assert torch.equal(after[..., :100], before) and (after[..., 100:] == float("-inf")).all()
    assert model.config.extra["language_vocab_sizes"] == {code: 100 for code in LANGS}
    model.add_language("sw_KE")  # a language added later scores every row
    with torch.no_grad():
        assert torch.isfinite(model(ids, lang_ids="sw_KE").logits).all()
        new_loss = model(ids, lang_ids="de_DE", labels=labels).loss
        mixed = model(ids, lang_ids=["de_DE", "sw_KE", "en_XX"], labels=labels, all_logits=True)
    assert torch.equal(new_loss, before_loss)  # bit for bit the loss before the rows were appended
    assert (mixed.logits[0, :, 100:] == float("-inf")).all() and torch.isfinite(mixed.logits[1]).all()
    model.save_pretrained(tmp_path)
    transformers = pytest.importorskip("transformers")
    ref, info = transformers.XmodForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        got = ref.eval()(ids, lang_ids=torch.tensor([1, 1, 1])).logits
    assert torch.allclose(got[..., :100], after[..., :100], atol=1e-5)  # transformers scores every row


class Batches:
    def __init__(self, vocab=100):
        self.g = torch.Generator().manual_seed(0)
        self.vocab = vocab

    def __next__(self):
        ids = torch.randint(4, self.vocab, (4, 12), generator=self.g)
        labels = torch.where(torch.rand(4, 12, generator=self.g) < 0.3, ids, -100)
        return {"input_ids": ids, "labels": labels, "lang_ids": torch.zeros(4, dtype=torch.long)}

    def __iter__(self):
        return self


def test_training_some_rows_leaves_the_others_bit_identical(tmp_path):
    model = ours(hidden_dropout_prob=0.0)
    rows = torch.zeros(100, dtype=torch.bool)
    rows[[5, 50, 99]] = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    V.train_rows_only(model.roberta.embeddings.word_embeddings.weight, rows)
    V.train_rows_only(model.lm_head.bias, rows)
    config = TrainConfig(max_steps=4, lr=1e-2, weight_decay=0.1, out_dir=str(tmp_path), device="cpu",
                         precision="fp32", tensorboard=False, save_every=0)
    Trainer(model, config, Batches(), trainable=lambda n: n in (V.EMBEDDING, V.LM_BIAS),
            no_decay=lambda n: n == V.EMBEDDING).fit()
    emb, bias = model.roberta.embeddings.word_embeddings.weight, model.lm_head.bias
    assert torch.equal(emb[~rows], before[V.EMBEDDING][~rows])
    assert torch.equal(bias[~rows], before[V.LM_BIAS][~rows])
    assert not torch.equal(emb[rows], before[V.EMBEDDING][rows]) and not torch.equal(bias[rows],
                                                                                      before[V.LM_BIAS][rows])


def test_token_counts_are_those_of_the_batches_and_survive_resume(old_tok, corpora):
    args = ({c: corpora[c] for c in ("aa_XX", "cc_XX")}, old_tok, ["aa_XX", "cc_XX"])
    kw = dict(seq_len=16, batch_size=4, count_tokens=True)
    a = MLMBatches(*args, **kw)
    expected = np.zeros(old_tok.get_vocab_size(), np.int64)
    for _ in range(5):
        batch = next(a)
        original = torch.where(batch["labels"] >= 0, batch["labels"], batch["input_ids"])
        expected += np.bincount(original.ravel().numpy(), minlength=expected.size)
    assert np.array_equal(a.token_counts, expected)
    state = a.state_dict()
    for _ in range(3):
        next(a)
    b = MLMBatches(*args, **kw)
    b.load_state_dict(state)
    for _ in range(3):
        next(b)
    assert np.array_equal(a.token_counts, b.token_counts)
    V.write_counts(Path(a.streams[0].source.path).parent, a.token_counts, [{"what": "test"}])
    counts, sources = V.read_counts(Path(a.streams[0].source.path).parent, old_tok.get_vocab_size())
    assert np.array_equal(counts, a.token_counts) and sources == [{"what": "test"}]
    assert V.read_counts(Path(a.streams[0].source.path).parent, 5) is None  # another vocabulary: ignored


@pytest.mark.parametrize("method", V.INIT_METHODS)
def test_initialisations(old_tok, corpora, method):
    ext = V.extend_tokenizer(old_tok, lines_of(corpora["nn_XX"]), budget=60)
    weight, bias = torch.randn(150, 16), torch.randn(150)
    cyrillic = [i for i in range(150) if V.piece_script(old_tok.id_to_token(i)) == "CYRILLIC"]
    weight[cyrillic] += 5.0  # a script of its own, far from the rest
    reference = np.ones(150, bool)
    reference[[0, 1, 2, 3, 149]] = False
    rows, b = V.init_new_rows(method, weight, bias, old_tok, ext.pieces, reference, seed=1)
    again, _ = V.init_new_rows(method, weight, bias, old_tok, ext.pieces, reference, seed=1)
    assert rows.shape == (len(ext.pieces), 16) and b.shape == (len(ext.pieces),) and torch.equal(rows, again)
    assert torch.isfinite(rows).all()
    if method == "overlap":
        k = next(k for k, p in enumerate(ext.pieces) if p.startswith("▁") and len(p) == 2)
        single = ext.pieces.index(ext.pieces[k][1])
        expected = (weight[old_tok.token_to_id("▁")].double() + rows[single].double()) / 2
        assert torch.allclose(rows[k].double(), expected, atol=1e-5)
    if method == "script":
        cyr_piece = V.init_new_rows(method, weight, bias, old_tok, ["▁аб" + "ܐ"], reference)[0]
        assert cyr_piece.mean() > 2.0  # a piece of a script the vocabulary has: its rows' statistics


def test_piece_lengths(old_tok):
    lengths = V.piece_lengths(old_tok)
    assert lengths[:4].tolist() == [0, 0, 0, 0] and lengths[mask_id(old_tok)] == 0
    assert lengths[old_tok.token_to_id("▁")] == 1
    assert json.loads(old_tok.to_str())["model"]["vocab"][10][0].__len__() == lengths[10]
    assert MASK not in V.piece_characters(old_tok)


def test_loss_per_character_divides_by_the_characters_of_the_targets(old_tok):
    model = ours(vocab_size=150)
    lengths = V.piece_lengths(old_tok)
    ids = torch.tensor([[0, 10, 11, 12, 13, 2], [0, 20, 21, 22, 23, 2]])
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1], labels[1, 4] = 11, 20, 23
    batch = {"input_ids": ids, "labels": labels, "lang_ids": torch.tensor([0, 1])}
    got = V.mlm_loss_per_character(model, [batch], lengths)
    with torch.no_grad():
        loss = float(model(**batch).loss) * 3
    assert got["targets"] == 3 and got["chars"] == lengths[[11, 20, 23]].sum() > 0
    assert got["loss"] == pytest.approx(loss, rel=1e-5) and got["nats_per_char"] == pytest.approx(loss / got["chars"])


def test_the_vocabulary_limit_follows_a_renamed_language_and_goes_with_a_removed_one():
    from xmodlm.languages import remove_language, rename_language

    model = ours()
    V.resize_vocabulary(model, torch.randn(3, 32))
    rename_language(model, "de_DE", "de_CH")
    remove_language(model, "fr_XX")
    assert model.config.extra["language_vocab_sizes"] == {"en_XX": 100, "de_CH": 100}
    with torch.no_grad():
        assert (model(torch.randint(4, 100, (1, 6)), lang_ids="de_CH").logits[..., 100:] == float("-inf")).all()


def test_mixed_limits_and_targets_beyond_a_languages_rows():
    """An old language scores over its rows; a target among later rows (its text holds the new language's pieces)
    is scored over every row rather than made infinite."""
    model = ours()
    V.resize_vocabulary(model, torch.randn(5, 32))
    model.add_language("sw_KE")
    ids = torch.tensor([[0, 10, 101, 12, 2], [0, 102, 20, 30, 2]])
    labels = torch.tensor([[-100, 10, 101, -100, -100], [-100, 102, 20, -100, -100]])
    with torch.no_grad():
        out = model(ids, lang_ids=["de_DE", "sw_KE"], labels=labels)
        full = model.lm_head(model.roberta(ids, lang_ids=["de_DE", "sw_KE"]).last_hidden_state[labels != -100])
    ce = torch.nn.functional.cross_entropy
    want = (ce(full[:1, :100], labels[0, 1:2]) + ce(full[1:], labels[labels != -100][1:], reduction="sum")) / 4
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, want, atol=1e-6)
    # the logits returned are those the loss used: a row whose target lies beyond its rows keeps every logit
    assert (out.logits[:1, 100:] == float("-inf")).all() and torch.isfinite(out.logits[1:]).all()
    assert torch.allclose(ce(out.logits, labels[labels != -100]), out.loss, atol=1e-6)


def test_a_second_extension_appends_after_the_first(old_tok, corpora):
    first = V.extend_tokenizer(old_tok, lines_of(corpora["nn_XX"]), budget=60).tokenizer
    second = V.extend_tokenizer(first, lines_of(corpora["ll_XX"]), budget=40)
    n = first.get_vocab_size()
    assert second.first_id == n and len(second.pieces) >= 2 and mask_id(second.tokenizer) == mask_id(old_tok)
    assert all(first.id_to_token(i) == second.tokenizer.id_to_token(i) for i in range(n))
    for code in ("aa_XX", "bb_XX", "cc_XX", "nn_XX"):
        lines = lines_of(corpora[code])
        assert [e.ids for e in first.encode_batch(lines)] == [e.ids for e in second.tokenizer.encode_batch(lines)]
