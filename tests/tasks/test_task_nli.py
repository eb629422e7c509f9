"""XNLI: loader on the real TSV files, header variants, errors, featurisation, collate."""

import pytest

from xmodlm.tasks import nli

LANGS = "ar bg de el en es fr hi ru sw th tr ur vi zh".split()


@pytest.mark.parametrize("lang", LANGS)
def test_load_real_dev_files(data_dir, lang):
    examples = nli.load(data_dir / "xnli" / f"dev-{lang}.tsv")
    assert len(examples) == 2490
    assert [sum(e.label == i for e in examples) for i in range(3)] == [830, 830, 830]
    # the files have CRLF endings: nothing of the \r may leak into the text
    assert not any("\r" in e.premise + e.hypothesis for e in examples)


def test_first_english_pair(data_dir):
    first = nli.load(data_dir / "xnli" / "dev-en.tsv")[0]
    assert first == nli.Example("And he said, Mama, I'm home.",
                                "He called his mom as soon as the school bus dropped him off.", 1)  # fmt: skip


def test_headers_are_recognised(tmp_path):
    mt = tmp_path / "train.tsv"
    mt.write_text("premise\thypothesis\tlabel\nA \"quoted\tB\tcontradictory\n", encoding="utf-8")
    assert nli.load(mt) == [nli.Example('A "quoted', "B", 2)]
    original = tmp_path / "xnli.dev.tsv"
    original.write_text(
        "language\tgold_label\tsentence1\tsentence2\tpairID\n"
        "en\tneutral\tP en\tH en\t1\n"
        "de\tentailment\tP de\tH de\t1\n",
        encoding="utf-8",
    )
    assert nli.load(original, language="de") == [nli.Example("P de", "H de", 0)]
    assert len(nli.load(original)) == 2
    with pytest.raises(ValueError, match="no 'language' column to select 'de'"):
        nli.load(mt, language="de")


def test_only_newline_ends_a_line(tmp_path):
    path = tmp_path / "cr.tsv"
    path.write_bytes("a\rb\tc\tneutral\r\n".encode())
    assert nli.load(path) == [nli.Example("a\rb", "c", 1)]


def test_malformed_lines_name_file_line_and_expectation(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\tneutral\na\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: expected 3 tab-separated fields"):
        nli.load(bad)
    bad.write_text("a\tb\tneutral\na\tb\tmaybe\n", encoding="utf-8")
    expected = r"bad\.tsv:2: expected a label in entailment, neutral, contradiction, got 'maybe'"
    with pytest.raises(ValueError, match=expected):
        nli.load(bad)


def test_from_hf_schema():
    rows = [{"premise": "p", "hypothesis": "h", "label": 2}, {"premise": "q", "hypothesis": "i", "label": 0}]
    assert nli.from_hf(rows) == [nli.Example("p", "h", 2), nli.Example("q", "i", 0)]
    with pytest.raises(ValueError, match="row 0: label -1"):
        nli.from_hf([{"premise": "p", "hypothesis": "h", "label": -1}])


def test_featurize_builds_xlmr_pairs(data_dir, tok):
    examples = nli.load(data_dir / "xnli" / "dev-en.tsv")[:50]
    features = nli.featurize(examples, tok, max_length=512)
    for ex, f in zip(examples, features):
        p = tok.encode(ex.premise, add_special_tokens=False).ids
        h = tok.encode(ex.hypothesis, add_special_tokens=False).ids
        assert f["input_ids"] == [0, *p, 2, 2, *h, 2]
        assert f["labels"] == ex.label


def test_featurize_truncates_to_max_length(data_dir, tok):
    examples = nli.load(data_dir / "xnli" / "dev-en.tsv")[:200]
    features = nli.featurize(examples, tok, max_length=32)
    assert max(len(f["input_ids"]) for f in features) == 32
    for f in features:
        ids = f["input_ids"]
        assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3


def test_collate_and_evaluate(data_dir, tok):
    features = nli.featurize(nli.load(data_dir / "xnli" / "dev-fr.tsv")[:8], tok)
    batch = nli.collate(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["input_ids"].shape == (8, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()
    assert batch["labels"].tolist() == [f["labels"] for f in features]
    assert nli.evaluate([0, 1, 2, 0], [0, 1, 2, 2]) == {"accuracy": 75.0}
