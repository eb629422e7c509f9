"""NER: CoNLL loader on the real dev files, PAN-X prefixes, errors, first-subword labels."""

import pytest

from xmodlm.tasks import IGNORE_INDEX, ner

# Sentences per file: blank-line-separated blocks, counted with awk on the files.
SENTENCES = {"en": 3250, "de": 2867, "hau": 816, "swa": 942, "yor": 983, "zul": 836}


@pytest.mark.parametrize("lang", SENTENCES)
def test_load_real_dev_files(data_dir, lang):
    path = data_dir / "ner" / f"dev-{lang}.txt"
    examples = ner.load(path)
    assert len(examples) == SENTENCES[lang]
    token_lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    assert sum(len(e.words) for e in examples) == token_lines
    assert all(len(e.words) == len(e.tags) for e in examples)


def test_english_tag_counts_and_label_lists(data_dir):
    en = ner.load(data_dir / "ner" / "dev-en.txt")
    tags = [t for e in en for t in e.tags]
    assert (tags.count("B-PER"), tags.count("I-PER"), tags.count("O")) == (1842, 1307, 44027)
    assert en[0].words[:3] == ["CRICKET", "-", "LEICESTERSHIRE"]
    assert ner.label_list(en) == list(ner.LABELS)  # WikiANN ids kept
    hau = ner.load(data_dir / "ner" / "dev-hau.txt")
    assert ner.label_list(hau) == ["O", "B-DATE", "I-DATE", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_panx_language_prefix_is_stripped(tmp_path):
    panx = tmp_path / "dev-en.tsv"
    panx.write_text("en:New\tB-LOC\nen:York\tI-LOC\nen:en:x\tO\n\nen:Paris\tB-LOC\n", encoding="utf-8")
    assert ner.load(panx) == [ner.Example(["New", "York", "en:x"], ["B-LOC", "I-LOC", "O"]),
                              ner.Example(["Paris"], ["B-LOC"])]  # fmt: skip
    assert ner.load(panx, strip_language_prefix=False)[1].words == ["en:Paris"]
    plain = tmp_path / "plain.txt"
    plain.write_text("Visit O\nde:x O\n", encoding="utf-8")  # first token has no prefix: keep all
    assert ner.load(plain)[0].words == ["Visit", "de:x"]
    assert ner.load(plain, strip_language_prefix=True)[0].words == ["Visit", "x"]


def test_conll2003_columns_and_docstart(tmp_path):
    conll = tmp_path / "eng.testa"
    conll.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n", encoding="utf-8")
    assert ner.load(conll) == [ner.Example(["EU", "rejects"], ["B-ORG", "O"])]


def test_malformed_lines_name_file_line_and_expectation(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Paris B-LOC\n\nLondon\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt:3: expected a token and a tag"):
        ner.load(bad)
    bad.write_text("Paris LOC\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt:1: expected an IOB2/IOBES tag"):
        ner.load(bad)


def test_from_hf_wikiann_schema():
    rows = [{"tokens": ["Ada", "Lovelace", "in", "London"], "ner_tags": [1, 2, 0, 5]}]
    assert ner.from_hf(rows) == [ner.Example(["Ada", "Lovelace", "in", "London"], ["B-PER", "I-PER", "O", "B-LOC"])]
    with pytest.raises(ValueError, match="row 0"):
        ner.from_hf([{"tokens": ["x"], "ner_tags": [7]}])


def test_only_first_subwords_are_labelled(data_dir, tok):
    examples = ner.load(data_dir / "ner" / "dev-de.txt")[:300]
    labels = ner.label_list(examples)
    features = ner.featurize(examples, tok, max_length=512, labels=labels)
    split_words = 0
    for ex, f in zip(examples, features):
        enc = tok.encode(ex.words, is_pretokenized=True, add_special_tokens=False)
        assert f["input_ids"] == [0, *enc.ids, 2]
        word_ids = [None, *enc.word_ids, None]
        for position, w in enumerate(word_ids):
            first = w is not None and word_ids[position - 1] != w
            expected = labels.index(ex.tags[w]) if first else IGNORE_INDEX
            assert f["labels"][position] == expected
        assert sum(label != IGNORE_INDEX for label in f["labels"]) == len(ex.words)
        split_words += len(enc.ids) - len(ex.words)
    assert split_words > 1000  # the tiny tokenizer splits many words, so the check bites


def test_unknown_tag_is_an_error(data_dir, tok):
    hau = ner.load(data_dir / "ner" / "dev-hau.txt")
    with pytest.raises(ValueError, match="'B-DATE' is not in the label list"):
        ner.featurize(hau, tok)


def test_decode_round_trip_and_truncation(data_dir, tok):
    examples = ner.load(data_dir / "ner" / "dev-en.txt")[:100]
    features = ner.featurize(examples, tok, max_length=24)
    assert max(len(f["input_ids"]) for f in features) == 24
    gold_ids = [[max(label, 0) for label in f["labels"]] for f in features]
    decoded = ner.decode(features, gold_ids, examples)
    for ex, tags, f in zip(examples, decoded, features):
        seen = sum(w >= 0 for w in f["word_ids"])
        assert tags[:seen] == ex.tags[:seen]
        assert tags[seen:] == ["O"] * (len(ex.words) - seen)  # cut words are predicted O
    full = ner.featurize(examples, tok, max_length=512)
    decoded = ner.decode(full, [[max(label, 0) for label in f["labels"]] for f in full], examples)
    assert ner.evaluate(decoded, [e.tags for e in examples]) == {"precision": 100.0, "recall": 100.0, "f1": 100.0}


def test_collate_pads_labels_with_ignore_index(data_dir, tok):
    features = ner.featurize(ner.load(data_dir / "ner" / "dev-swa.txt")[:6], tok,
                             labels=ner.label_list(ner.load(data_dir / "ner" / "dev-swa.txt")))  # fmt: skip
    batch = ner.collate(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].shape == batch["input_ids"].shape
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == IGNORE_INDEX).all() and (batch["input_ids"][pad] == 1).all()
