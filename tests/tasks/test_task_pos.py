"""POS: XTREME TSV on the real UD dev files, CoNLL-U rules, errors, featurise / decode."""

import pytest

from xmodlm.tasks import IGNORE_INDEX, pos

# Sentences per file, counted with awk (fr and ru end without a final blank line).
SENTENCES = {"ar": 909, "en": 3974, "fi": 3239, "fr": 2903, "hi": 1659, "id": 559,
             "ko": 3016, "ru": 8108, "ta": 80, "tr": 988, "vi": 800, "zh": 1000}  # fmt: skip


@pytest.mark.parametrize("lang", SENTENCES)
def test_load_real_dev_files(data_dir, lang):
    path = data_dir / "udpos" / f"dev-{lang}.tsv"
    examples = pos.load(path)
    assert len(examples) == SENTENCES[lang]
    token_lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    assert sum(len(e.words) for e in examples) == token_lines
    assert {t for e in examples for t in e.tags} <= set(pos.LABELS)
    assert pos.label_list(examples) == list(pos.LABELS)


def test_last_sentence_without_trailing_blank_line(data_dir):
    last = pos.load(data_dir / "udpos" / "dev-fr.tsv")[-1]
    assert (last.words[-1], last.tags[-1]) == ("bifurques", "VERB")


CONLLU = """\
# sent_id = 1
# text = Vámonos al mar.
1-2\tVámonos\t_\t_\t_\t_\t_\t_\t_\t_
1\tVamos\tir\tVERB\t_\t_\t0\troot\t_\t_
2\tnos\tnosotros\tPRON\t_\t_\t1\tobj\t_\t_
3-4\tal\t_\t_\t_\t_\t_\t_\t_\t_
3\ta\ta\tADP\t_\t_\t5\tcase\t_\t_
4\tel\tel\tDET\t_\t_\t5\tdet\t_\t_
5\tmar\tmar\tNOUN\t_\t_\t1\tobl\t_\t_
5.1\tsiempre\tsiempre\tADV\t_\t_\t_\t_\t5:dep\t_
6\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_

1\tNew York\tNew York\tPROPN\t_\t_\t0\troot\t_\t_
"""


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = tmp_path / "es-ud-dev.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    assert pos.load(path) == [
        pos.Example(["Vamos", "nos", "a", "el", "mar", "."], ["VERB", "PRON", "ADP", "DET", "NOUN", "PUNCT"]),
        pos.Example(["New York"], ["PROPN"]),  # tokens may contain spaces
    ]


def test_malformed_lines_name_file_line_and_expectation(tmp_path):
    conllu = tmp_path / "bad.conllu"
    conllu.write_text("# c\n1\tx\tx\tNOUN\t_\t_\t0\troot\t_\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conllu:2: expected 10 tab-separated CoNLL-U columns \(found 9\)"):
        pos.load(conllu)
    conllu.write_text("one\tx\tx\tNOUN\t_\t_\t0\troot\t_\t_\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conllu:1: expected a word index"):
        pos.load(conllu)
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("The\tDET\n\nthe DET\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:3: expected token<TAB>tag, got 'the DET'"):
        pos.load(tsv)


def test_featurize_decode_evaluate(data_dir, tok):
    examples = pos.load(data_dir / "udpos" / "dev-ta.tsv")
    features = pos.featurize(examples, tok, max_length=512)
    for ex, f in zip(examples, features):
        labelled = [label for label in f["labels"] if label != IGNORE_INDEX]
        assert labelled == [pos.LABELS.index(t) for t in ex.tags]
    gold_ids = [[max(label, 0) for label in f["labels"]] for f in features]
    decoded = pos.decode(features, gold_ids, examples)
    assert pos.evaluate(decoded, [e.tags for e in examples]) == {"accuracy": 100.0}
    # truncated words get MISSING and count as errors
    short = pos.featurize(examples, tok, max_length=16)
    decoded = pos.decode(short, [[max(label, 0) for label in f["labels"]] for f in short], examples)
    kept = sum(w >= 0 for f in short for w in f["word_ids"])
    total = sum(len(e.words) for e in examples)
    assert kept < total
    assert pos.evaluate(decoded, [e.tags for e in examples])["accuracy"] == pytest.approx(100 * kept / total)
    batch = pos.collate(short[:4])
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 16)
