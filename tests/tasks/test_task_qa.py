"""QA: SQuAD-format loader on XQuAD, sliding windows, answer spans, post-processing."""

import json

import numpy as np
import pytest
import torch

from xmodlm.tasks import qa

LANGS = "ar de el en es hi ro ru th tr vi zh".split()


@pytest.mark.parametrize("lang", LANGS)
def test_load_real_xquad(data_dir, lang):
    examples = qa.load(data_dir / "xquad" / f"xquad.{lang}.json")
    assert len(examples) == 1190
    assert len({e.id for e in examples}) == 1190
    assert len({e.context for e in examples}) == 240  # paragraphs
    for e in examples:
        assert len(e.answers) == len(e.answer_starts) == 1
        assert e.context[e.answer_starts[0] :].startswith(e.answers[0])


@pytest.fixture(scope="module", params=["en", "zh"])
def windows(request, data_dir, tok):
    examples = qa.load(data_dir / "xquad" / f"xquad.{request.param}.json")
    # short windows so that most contexts need several
    features = qa.featurize(examples, tok, max_length=160, stride=48, max_query_length=40)
    return request.param, examples, features, tok


def test_window_layout_and_overlap(windows):
    _, examples, features, tok = windows
    by_id = {}
    for f in features:
        by_id.setdefault(f["example_id"], []).append(f)
    assert len(by_id) == len(examples) and len(features) > 2 * len(examples)
    for ex in examples:
        q = tok.encode(ex.question, add_special_tokens=False).ids[:40]
        context = tok.encode(ex.context, add_special_tokens=False)
        spans = []
        for f in by_id[ex.id]:
            ids = f["input_ids"]
            assert len(ids) <= 160 and len(ids) == len(f["offsets"])
            assert ids[: len(q) + 3] == [0, *q, 2, 2] and ids[-1] == 2
            assert f["offsets"][: len(q) + 3] == [None] * (len(q) + 3) and f["offsets"][-1] is None
            spans.append([o for o in f["offsets"] if o is not None])
        for a, b in zip(spans, spans[1:]):
            assert a[-48:] == b[:48]  # consecutive windows share exactly `stride` tokens
        joined = spans[0] + [o for s in spans[1:] for o in s[48:]]
        assert joined == context.offsets  # together the windows cover the context once


def _aligned(ex, offsets):
    # Does the gold answer start and end on token boundaries? (A leading space inside a
    # token's offsets, as Metaspace gives, still counts as a boundary.)
    a = ex.answer_starts[0]
    b = a + len(ex.answers[0])
    starts = {x for x, _ in offsets} | {x + 1 for x, _ in offsets if ex.context[x : x + 1].isspace()}
    return a in starts and b in {y for _, y in offsets}


def test_answers_map_back_to_the_exact_text(windows):
    lang, examples, features, tok = windows
    by_id = {e.id: e for e in examples}
    answered, aligned = set(), 0
    for f in features:
        ex = by_id[f["example_id"]]
        start, end = f["start_positions"], f["end_positions"]
        if start == 0:
            assert end == 0
            continue
        text = ex.context[f["offsets"][start][0] : f["offsets"][end][1]].strip()
        offsets = [o for o in f["offsets"] if o is not None]
        if _aligned(ex, offsets):
            assert text == ex.answers[0]
            aligned += 1
        else:
            # a token straddles the answer's edge (common in unsegmented zh): the span is
            # the smallest run of tokens that covers it
            assert ex.answers[0] in text
            assert ex.answers[0] not in ex.context[f["offsets"][start + 1][0] : f["offsets"][end][1]]
            assert ex.answers[0] not in ex.context[f["offsets"][start][0] : f["offsets"][end - 1][1]]
        answered.add(ex.id)
    positives = sum(f["start_positions"] > 0 for f in features)
    assert aligned >= 0.95 * positives
    if lang == "en":  # with spaces around words every answer is token-aligned
        assert aligned == positives
    # an answer of at most `stride` tokens always lies whole inside some window
    for ex in examples:
        s = ex.answer_starts[0]
        offsets = tok.encode(ex.context, add_special_tokens=False).offsets
        n = sum(1 for x, y in offsets if y > s and x < s + len(ex.answers[0]))
        if n <= 48:
            assert ex.id in answered, ex.id


def _gold_logits(features, length):
    # start/end logits that point at the gold span, padded to `length` with values that
    # would win if padding were not ignored, and with a trap in the question tokens.
    rng = np.random.default_rng(0)
    starts = rng.normal(size=(len(features), length))
    ends = rng.normal(size=(len(features), length))
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        starts[i, n:] = ends[i, n:] = 100.0
        starts[i, 1] = ends[i, 2] = 50.0  # inside the question: not a valid answer
        if f["start_positions"]:
            starts[i, f["start_positions"]] = ends[i, f["end_positions"]] = 20.0
    return starts, ends


def test_postprocess_recovers_gold_spans(windows):
    lang, examples, features, _ = windows
    starts, ends = _gold_logits(features, 200)
    predictions = qa.postprocess(examples, features, starts, ends, max_answer_length=200)
    # the best a model can do: the text of the gold token span, for every question with
    # a window that holds its whole answer
    contexts = {e.id: e.context for e in examples}
    best = {}
    for f in features:
        if f["start_positions"]:
            a, b = f["offsets"][f["start_positions"]][0], f["offsets"][f["end_positions"]][1]
            best[f["example_id"]] = contexts[f["example_id"]][a:b].strip()
    assert len(best) > 0.9 * len(examples)
    assert all(predictions[qid] == text for qid, text in best.items())
    scores = qa.evaluate(predictions, {e.id: e.answers for e in examples if e.id in best})
    if lang == "en":
        assert scores == {"exact_match": 100.0, "f1": 100.0}
    # torch rows (any float dtype) are accepted as well
    as_torch = qa.postprocess(examples[:20], features, torch.tensor(starts).bfloat16(), torch.tensor(ends),
                              max_answer_length=200)  # fmt: skip
    assert all(as_torch[e.id] == predictions[e.id] for e in examples[:20])


def test_postprocess_respects_max_answer_length_and_context():
    ex = qa.Example("q1", "Who?", "Ada Lovelace wrote it", ["Ada Lovelace"], [0])
    feature = {"input_ids": [0, 5, 2, 2, 6, 7, 8, 9, 2], "example_id": "q1",
               "offsets": [None] * 4 + [(0, 3), (3, 12), (12, 18), (18, 21)] + [None]}  # fmt: skip
    start = [0, 9, 0, 0, 5, 0, 0, 0, 9]
    end = [0, 0, 0, 0, 0, 4, 0, 3, 9]
    assert qa.postprocess([ex], [feature], [start], [end]) == {"q1": "Ada Lovelace"}
    assert qa.postprocess([ex], [feature], [start], [end], max_answer_length=1) == {"q1": "Ada"}
    # every high-scoring end before the start: no valid span among the n-best
    assert qa.postprocess([ex], [feature], [[0, 0, 0, 0, 0, 0, 0, 9, 0]], [[0, 0, 0, 0, 9, 0, 0, 0, 0]],
                          n_best=1) == {"q1": ""}  # fmt: skip


def test_window_too_small_for_stride_is_an_error(data_dir, tok):
    ex = qa.Example("q", "What?", "Some context.", ["context"], [5])
    with pytest.raises(ValueError, match="question 'q': max_length 40 leaves .* stride 128"):
        qa.featurize([ex], tok, max_length=40)


def test_collate(windows):
    _, _, features, _ = windows
    batch = qa.collate(features[:5])
    assert set(batch) == {"input_ids", "attention_mask", "start_positions", "end_positions"}
    assert batch["start_positions"].tolist() == [f["start_positions"] for f in features[:5]]
    assert batch["input_ids"].shape[0] == 5


def test_malformed_json_names_file_and_place(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [\n  {"paragraphs": [}\n]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json:2: expected SQuAD JSON, got invalid JSON"):
        qa.load(bad)
    paragraph = {"context": "c", "qas": [{"id": "1", "answers": []}]}
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [paragraph]}]}
    bad.write_text(json.dumps(squad), encoding="utf-8")
    with pytest.raises(ValueError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'question'"):
        qa.load(bad)


def test_from_hf_and_mlqa_evaluation():
    rows = [{"id": "a", "title": "T", "context": "北京大学在北京", "question": "哪里?",
             "answers": {"text": ["北京大学"], "answer_start": [0]}}]  # fmt: skip
    examples = qa.from_hf(rows)
    assert examples == [qa.Example("a", "哪里?", "北京大学在北京", ["北京大学"], [0], "T")]
    assert qa.evaluate({"a": "北京 大学"}, examples, lang="zh")["exact_match"] == 100.0
    assert qa.evaluate({"a": "北京 大学"}, {"a": ["北京大学"]})["exact_match"] == 0.0
