"""XCOPA: jsonl loader on the real files, errors, one pair per choice, [B, C, T] batches."""

import json

import pytest

from xmodlm.tasks import mc

LANGS = "et id it sw ta th tr vi zh".split()


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("split, count", [("val", 100), ("test", 500)])
def test_load_real_files(data_dir, lang, split, count):
    examples = mc.load(data_dir / "xcopa" / f"{split}.{lang}.jsonl")
    assert len(examples) == count
    assert [e.idx for e in examples] == list(range(count))
    assert all(len(e.choices) == 2 and e.label in (0, 1) for e in examples)


def test_first_chinese_example(data_dir):
    first = mc.load(data_dir / "xcopa" / "val.zh.jsonl")[0]
    assert first == mc.Example("那人打开水龙头。", ("厕所里满是水。", "水从水龙头喷口流出。"), "effect", 1, 0)


ROW = {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 0}


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", "one JSON object"),
        (
            json.dumps({k: v for k, v in ROW.items() if k != "choice2"}),
            "an object with the keys premise, choice1, choice2, question, label",
        ),
        (json.dumps({**ROW, "question": "why"}), 'question "cause" or "effect"'),
        (json.dumps({**ROW, "label": 2}), "label 0 or 1"),
    ],
)
def test_malformed_lines_name_file_line_and_expectation(tmp_path, line, expected):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROW) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: expected {expected}"):
        mc.load(bad)


def test_featurize_one_pair_per_choice(data_dir, tok):
    examples = mc.load(data_dir / "xcopa" / "val.it.jsonl")
    features = mc.featurize(examples, tok)
    for ex, f in zip(examples, features):
        context = tok.encode(f"{ex.premise} {mc.CONNECTORS[ex.question]}", add_special_tokens=False).ids
        assert len(f["input_ids"]) == 2 and f["labels"] == ex.label
        for choice, ids in zip(ex.choices, f["input_ids"]):
            assert ids == [0, *context, 2, 2, *tok.encode(choice, add_special_tokens=False).ids, 2]
    custom = mc.featurize(examples[:1], tok, connectors={"cause": "perché?", "effect": "quindi?"})
    assert custom[0]["input_ids"] != features[0]["input_ids"]


def test_collate_shapes_and_evaluate(data_dir, tok):
    features = mc.featurize(mc.load(data_dir / "xcopa" / "val.sw.jsonl")[:5], tok, max_length=24)
    batch = mc.collate(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[:2] == (5, 2) and batch["input_ids"].shape[2] <= 24
    for b, f in enumerate(features):
        for c, ids in enumerate(f["input_ids"]):
            assert batch["input_ids"][b, c, : len(ids)].tolist() == ids
            assert batch["attention_mask"][b, c].sum() == len(ids)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()
    assert mc.evaluate([1, 0], [1, 1]) == {"accuracy": 50.0}
    with pytest.raises(ValueError, match=r"one number of choices, got \[2, 3\]"):
        mc.collate([features[0], {"input_ids": [[0, 2]] * 3, "labels": 0}])
