"""Metrics: hand-computed cases, and parity with seqeval where it is installed."""

import random
import warnings

import pytest

from xmodlm.metrics import (
    accuracy,
    answer_exact_match,
    answer_f1,
    entities,
    entity_scores,
    normalize_answer,
    squad_scores,
    token_accuracy,
)


def test_accuracy_is_a_percentage():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 75.0
    assert token_accuracy([["A", "B"], ["C"]], [["A", "X"], ["C"]]) == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: accuracy([1], [1, 2]),
        lambda: accuracy([], []),
        lambda: token_accuracy([["A"]], [["A", "B"]]),
        lambda: entity_scores([["O"]], [["O"], ["O"]]),
    ],
)
def test_mismatched_or_empty_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


# ---------------------------------------------------------------- entities


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
        (["O", "B-ORG"], [("ORG", 1, 1)]),  # closed by the end of the sentence
        (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),  # B always opens
        # I- without a preceding B- of its type opens an entity (seqeval default mode)
        (["O", "I-PER", "I-PER"], [("PER", 1, 2)]),
        (["I-PER"], [("PER", 0, 0)]),
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),
        (["I-PER", "B-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 2)]),
        # IOBES is read too
        (["S-PER", "B-LOC", "E-LOC", "E-LOC"], [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]),
        (["O", "O"], []),
    ],
)
def test_entities_hand_cases(tags, expected):
    assert entities(tags) == expected


def test_entities_reject_tags_that_are_not_iob():
    with pytest.raises(ValueError, match="'PER'"):
        entities(["O", "PER"])


def test_entity_scores_hand_computed():
    # 3 gold entities, 3 predicted, 2 correct (sentence 0: PER right, LOC typed as ORG).
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = entity_scores(pred, gold)
    assert scores == pytest.approx({"precision": 200 / 3, "recall": 200 / 3, "f1": 200 / 3})
    # 1 predicted and right out of 2 gold: P 100, R 50, F1 2*1*.5/1.5 = 66.7
    scores = entity_scores([["B-PER", "O", "O", "O"]], [["B-PER", "O", "B-LOC", "O"]])
    assert scores == pytest.approx({"precision": 100.0, "recall": 50.0, "f1": 200 / 3})
    # a wrong boundary is a miss; nothing predicted gives zeros, not an error
    assert entity_scores([["B-PER", "O", "O"]], [["B-PER", "I-PER", "O"]])["f1"] == 0.0
    assert entity_scores([["O"]], [["B-PER"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_entities_do_not_cross_sentences():
    # As one flat sequence these would be one entity; per sentence they are two.
    assert entity_scores([["I-PER"], ["I-PER"]], [["I-PER"], ["I-PER"]])["f1"] == 100.0
    assert entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])["f1"] == 100.0


@pytest.mark.parametrize("prefixes", ["BIO", "BIOES"])
def test_entity_scores_match_seqeval_on_random_tags(prefixes):
    seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval is not installed (pip install seqeval)")
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(0)
    tags = ["O"] + [f"{p}-{t}" for p in prefixes if p != "O" for t in ("PER", "LOC", "MISC")]

    for _ in range(300):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 6))]
        pred = [[rng.choice(tags) for _ in sentence] for sentence in gold]
        for sentence in gold:
            assert entities(sentence) == list(get_entities(sentence))
        ours = entity_scores(pred, gold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns when a denominator is 0
            theirs = {
                "precision": 100 * seqeval.precision_score(gold, pred),
                "recall": 100 * seqeval.recall_score(gold, pred),
                "f1": 100 * seqeval.f1_score(gold, pred),
            }
        assert ours == pytest.approx(theirs), (gold, pred)


# ---------------------------------------------------------------- SQuAD v1.1


def test_squad_normalisation():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words
    assert normalize_answer("$1,000") == "1000"
    # SQuAD strips ASCII punctuation only: guillemets and dashes stay
    assert normalize_answer("«the» cat—dog") == "« » cat—dog"


def test_squad_answer_scores():
    assert answer_exact_match("The Broncos.", "broncos")
    # "cat sat" vs "cat sat down": P 1, R 2/3, F1 0.8
    assert answer_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert answer_f1("", "") == 0.0  # v1.1: no overlap is 0, even when both are empty
    # "b b b" vs "b c": one shared b (multiset counts): P 1/3, R 1/2, F1 0.4
    assert answer_f1("b b b", "b c") == pytest.approx(0.4)


def test_squad_scores_max_over_golds_and_missing_questions_score_zero():
    references = {"q1": ["Denver Broncos", "The Denver Broncos"], "q2": ["1876"], "q3": ["x"]}
    predictions = {"q1": "denver broncos.", "q2": "in 1876", "extra": "ignored"}
    # q1: EM 1, F1 1; q2: EM 0, F1 2/3 ("in 1876" vs "1876"); q3 unanswered: 0
    scores = squad_scores(predictions, references)
    assert scores == pytest.approx({"exact_match": 100 / 3, "f1": 100 * (1 + 2 / 3) / 3})


# ---------------------------------------------------------------- MLQA


@pytest.mark.parametrize(
    "lang, text, expected",
    [
        ("en", "«The» cat—dog", "catdog"),  # Unicode punctuation goes too
        ("en", "€100 $5", "€100 5"),  # € is a symbol (Sc), $ is in string.punctuation
        ("es", "El perro de la casa", "perro de casa"),
        ("de", "Der Hund und das Haus des Diebes", "hund und haus diebes"),
        ("vi", "Những con mèo của tôi", "con mèo tôi"),
        ("ar", "الكتاب", "كتاب"),
        ("ar", "سلالة", "سل ة"),  # the script removes "ال" inside words as well
        ("hi", "भारत।", "भारत"),  # danda is punctuation; Hindi has no articles
        ("hi", "the cat", "the cat"),
        ("zh", "北京大学。", "北 京 大 学"),
        ("zh", "2008年北京 Olympics", "2008 年 北 京 olympics"),
        ("zh", "㐀㐁", "㐀㐁"),  # outside U+4E00..U+9FA5: not split, like the script
    ],
)
def test_mlqa_normalisation(lang, text, expected):
    assert normalize_answer(text, lang) == expected


def test_mlqa_scores_use_the_language():
    assert answer_exact_match("北京 大学", "北京大学", "zh")
    assert not answer_exact_match("北京 大学", "北京大学")
    # zh tokens are characters: [北 京 大 学] vs [北 京]: P 1/2, R 1, F1 2/3
    assert answer_f1("北京大学", "北京", "zh") == pytest.approx(2 / 3)
    assert answer_f1("北京大学", "北京") == 0.0  # one whitespace token each, no overlap
    assert squad_scores({"q": "la casa"}, {"q": ["casa"]}, lang="es")["exact_match"] == 100.0
    assert squad_scores({"q": "la casa"}, {"q": ["casa"]})["exact_match"] == 0.0


def test_mlqa_unknown_language_names_the_known_ones():
    with pytest.raises(ValueError, match="ru.*lang=None"):
        normalize_answer("x", "ru")
