"""Tests for xmodlm.tokenizer: XLM-R special ids, post-processor, alpha-sampled training sample, character coverage,
save/load, and id parity with transformers.AutoTokenizer (the reference loader) on the saved directory."""
from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # the package need not be installed
from xmodlm.data import CorpusReport, discover_corpora  # noqa: E402
from xmodlm.tokenizer import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, _sample, load_tokenizer, mask_id,  # noqa: E402
                              save_tokenizer, train_tokenizer)

NTREX = Path(__file__).resolve().parents[2] / "shared" / "data" / "ntrex"
needs_ntrex = pytest.mark.skipif(not NTREX.is_dir(), reason=f"real corpus {NTREX} absent (see shared/data/README.md)")
VOCAB = 120
ALPHABETS = {"aa_XX": "abcdefg", "bb_XX": "hijklmn", "cc_XX": "абвгдеж"}


def write_corpus(directory: Path, n_lines: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """Synthetic languages: random words over a per-language alphabet, one sentence a line."""
    rnd = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for code, n in n_lines.items():
        letters = ALPHABETS[code]
        lines = [" ".join("".join(rnd.choices(letters, k=rnd.randint(1, 6))) for _ in range(rnd.randint(3, 10)))
                 for _ in range(n)]
        out[code] = directory / f"{code}.txt"
        out[code].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), {"aa_XX": 300, "bb_XX": 200, "cc_XX": 100})


@pytest.fixture(scope="module")
def tok(corpora):
    return train_tokenizer(corpora, VOCAB, sample_sentences=600, progress=False)


@pytest.fixture(scope="module")
def hf_dir(tok, tmp_path_factory):
    return save_tokenizer(tok, tmp_path_factory.mktemp("tok"))


PARITY_TEXTS = [
    "abc defg hij", "абв где ж", "  runs   of\tspaces  ",
    "ﬁne ＡＢＣ １２３ Ⅻ",  # NFKC changes these
    "unseen words: xyz, qrs!", "abc <mask> def", "abc<mask>def", "<s> literal </s> tokens <pad>", "", "é e\u0301",
]


def test_special_token_ids(tok):
    assert (BOS_ID, PAD_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert tok.get_vocab_size() == VOCAB
    assert mask_id(tok) == VOCAB - 1  # XLM-R: <mask> is the last id


def test_post_processor_single_and_pair(tok):
    a, b = tok.encode("abc def").ids, tok.encode("hij").ids
    body_a = tok.encode("abc def", add_special_tokens=False).ids
    body_b = tok.encode("hij", add_special_tokens=False).ids
    assert a == [0, *body_a, 2]
    assert tok.encode("abc def", "hij").ids == [0, *body_a, 2, 2, *body_b, 2]
    assert b[0] == 0 and b[-1] == 2


def test_same_seed_same_tokenizer(corpora, tok):
    """The Unigram trainer's order and some of its scores vary between runs (hash-map order); the trained
    tokenizer must not: same ids, same scores, same file."""
    again = train_tokenizer(corpora, VOCAB, sample_sentences=600, progress=False)
    assert again.get_vocab() == tok.get_vocab()
    assert again.to_str() == tok.to_str()
    lines = corpora["aa_XX"].read_text(encoding="utf-8").splitlines()[:50]
    assert [e.ids for e in again.encode_batch(lines)] == [e.ids for e in tok.encode_batch(lines)]


def test_training_sample_follows_alpha(tmp_path):
    """Language l gets ~ N p_l lines, p_l ~ n_l^alpha; a language smaller than its quota repeats every line
    before repeating any line twice."""
    corpora = write_corpus(tmp_path, {"aa_XX": 2000, "bb_XX": 200, "cc_XX": 20})
    sizes = {"aa_XX": 2000, "bb_XX": 200, "cc_XX": 20}
    n_sample, alpha = 1500, 0.3
    lines = _sample(corpora, sizes, n_sample, alpha, seed=1, report=CorpusReport(), progress=False)
    assert len(lines) == n_sample
    lang_of = {ln: code for code, path in corpora.items() for ln in path.read_text(encoding="utf-8").splitlines()}
    got = Counter(lang_of[ln] for ln in lines)
    p = np.array([2000, 200, 20]) ** alpha
    p /= p.sum()
    for code, pl in zip(sizes, p):  # multinomial counts: within 4 standard deviations
        assert abs(got[code] - n_sample * pl) < 4 * np.sqrt(n_sample * pl * (1 - pl)), (code, got[code], pl)
    small = Counter(ln for ln in lines if lang_of[ln] == "cc_XX")
    assert max(small.values()) - min(small.values()) <= 1 and len(small) == 20


def test_save_load_roundtrip(tok, hf_dir):
    assert {p.name for p in hf_dir.iterdir()} >= {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    again = load_tokenizer(hf_dir)
    for text in PARITY_TEXTS:
        assert again.encode(text).ids == tok.encode(text).ids


def test_load_errors_name_the_path(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_tokenizer(tmp_path)  # a directory without tokenizer.json
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(tmp_path / "nowhere")
    wrong = json.loads(tok.to_str())
    wrong["added_tokens"] = [t for t in wrong["added_tokens"] if t["content"] != "<mask>"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(wrong), encoding="utf-8")
    with pytest.raises(ValueError, match="<mask>"):
        load_tokenizer(tmp_path)


def test_autotokenizer_parity(tok, hf_dir):
    """Reference: transformers.AutoTokenizer on the saved directory must give our ids, for single texts, pairs,
    the mask token and NFKC-sensitive text."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference loader")
    hf = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    assert (hf.bos_token_id, hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    assert hf.mask_token_id == mask_id(tok) == len(hf) - 1
    assert hf.sep_token_id == 2 and hf.cls_token_id == 0
    for text in PARITY_TEXTS:
        assert hf(text)["input_ids"] == tok.encode(text).ids, text
    texts = [t for t in PARITY_TEXTS if t]  # transformers reads an empty second text as "no pair"
    for a, b in zip(texts, reversed(texts)):
        assert hf(a, b)["input_ids"] == tok.encode(a, b).ids, (a, b)
    batch = hf(PARITY_TEXTS[:3], padding=True)["input_ids"]
    assert batch[0][-1] == PAD_ID or len(set(map(len, batch))) == 1
    masked = hf.mask_token.join(["abc ", " def"])
    assert mask_id(tok) in hf(masked)["input_ids"]


@needs_ntrex
def test_real_multiscript_small_vocab_and_parity(tmp_path):
    """13 scripts' worth of characters do not fit 200 ids: rare characters are left to <unk> instead of failing,
    and the saved tokenizer matches transformers on every NTREX language, seen or not."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference loader")
    corpora = discover_corpora(NTREX)
    train = {c: corpora[c] for c in ("en_XX", "zh_CN", "ko_KR", "hi_IN")}
    tok = train_tokenizer(train, 200, sample_sentences=800, progress=False, skip_lines=200)
    assert tok.get_vocab_size() == 200 and mask_id(tok) == 199
    hf = transformers.AutoTokenizer.from_pretrained(str(save_tokenizer(tok, tmp_path)))
    for code, path in corpora.items():
        lines = path.read_text(encoding="utf-8").splitlines()[-20:]
        assert hf(lines)["input_ids"] == [e.ids for e in tok.encode_batch(lines)], code
        assert hf(lines[0], lines[1])["input_ids"] == tok.encode(lines[0], lines[1]).ids
