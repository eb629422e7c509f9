"""Tests for xmodlm.synthetic: determinism, language diversity, parallelism, task labels,
Zipf frequencies, throughput, and that written files parse like the real benchmark files."""
from __future__ import annotations

import json
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # the package need not be installed
from xmodlm.synthetic import (LANGUAGE_CODES, NER_TAGS, NLI_LABELS, Meaning, SyntheticWorld,  # noqa: E402
                              language_codes)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real benchmark files not found at {DATA}")


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(seed=0)


def entities(tagged: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """(type, number of tokens) of each IOB2 entity, in order of appearance."""
    spans: list[list] = []
    for _, tag in tagged:
        if tag.startswith("B-"):
            spans.append([tag[2:], 1])
        elif tag.startswith("I-"):
            assert spans and spans[-1][0] == tag[2:], f"I- tag without its B-: {tagged}"
            spans[-1][1] += 1
    return [tuple(s) for s in spans]


# -- languages ----------------------------------------------------------------------------


def test_codes_and_unknown_language(world):
    assert len(LANGUAGE_CODES) == 64 == len(set(LANGUAGE_CODES))
    assert world.languages == list(LANGUAGE_CODES) and LANGUAGE_CODES[:2] == ("syn00", "syn01")
    assert SyntheticWorld(0, n_languages=101).languages[-1] == "syn100" == language_codes(101)[-1]
    with pytest.raises(ValueError, match=r"'syn64'.*syn00\.\.syn63"):
        world.realise(world.sample_meanings(1, 0)[0], "syn64")


def test_a_language_does_not_depend_on_the_world_size(world):
    small = SyntheticWorld(0, n_languages=20)
    meanings = world.sample_meanings(50, 1)
    for code in ("syn03", "syn17"):
        assert [small.realise(m, code) for m in meanings] == [world.realise(m, code) for m in meanings]
        assert small.describe(code)["family"] == world.describe(code)["family"]


def test_scripts_orders_and_morphology_vary(world):
    info = [world.describe(c) for c in world.languages]
    json.dumps(info)  # plain data
    scripts = Counter(d["script"] for d in info)
    assert len(scripts) >= 5, scripts
    assert scripts.most_common(1)[0][1] >= 2  # some languages share a script
    latin_families = {d["family"] for d in info if d["script"] == "Latin"}
    assert len(latin_families) >= 2  # unrelated languages in one script, as with real Latin
    assert len({d["word_order"] for d in info}) >= 3
    assert len({d["adjective_order"] for d in info}) == 2
    assert {d["morphology"] for d in info} == {"isolating", "agglutinative", "fusional"}


def test_word_order_shows_in_the_text(world):
    # Only agent, verb and patient: where the agent's name stands depends on the word order.
    m = Meaning(agent=0, verb=0, patient=0)
    first = {}
    for code in world.languages:
        tags = [t for _, t in world.realise_tokens(m, code)]
        first[code] = tags.index("B-PER")
    by_order: dict[str, set] = {}
    for code in world.languages:
        by_order.setdefault(world.describe(code)["word_order"][0], set()).add(first[code] == 0)
    assert len(set(first.values())) >= 2
    assert True not in by_order.get("V", set())  # verb-initial languages never start with the agent


def test_every_character_is_assigned_unicode(world):
    for code in world.languages:
        for line in world.corpus(code, 100, seed=5):
            unnamed = {c for c in line if unicodedata.name(c, "") == ""}
            assert not unnamed, f"{code}: unassigned characters {unnamed} in {line!r}"


def test_related_languages_share_vocabulary(world):
    code = next(c for c in world.languages if world.related(c))
    relative = world.related(code)[0]
    stranger = next(c for c in world.languages if c != code and c not in world.related(code))
    assert world.similarity(code, relative) > 0.2
    assert world.similarity(code, stranger) == 0.0
    a, b, c = (world.lexicon(x, phonemic=True) for x in (code, relative, stranger))
    same = lambda x, y: sum(x[k] == y[k] for k in x) / len(x)  # noqa: E731
    assert same(a, b) > same(a, c) + 0.05, (same(a, b), same(a, c))


# -- determinism and parallel text ----------------------------------------------------------


def test_same_seed_same_text_other_seed_other_text(world):
    again = SyntheticWorld(seed=0)
    assert list(world.corpus("syn05", 300, seed=3)) == list(again.corpus("syn05", 300, seed=3))
    assert list(world.corpus("syn05", 300, seed=3)) != list(world.corpus("syn05", 300, seed=4))
    other = SyntheticWorld(seed=1)
    assert list(world.corpus("syn05", 300, seed=3)) != list(other.corpus("syn05", 300, seed=3))
    assert world.lexicon("syn05") != other.lexicon("syn05")
    assert world.sample_meanings(3000, 7)[:10] == world.sample_meanings(10, 7)  # prefix-stable


def test_parallel_text_has_the_same_entities(world):
    meanings = world.sample_meanings(300, seed=2)
    reference = [sorted(entities(world.realise_tokens(m, "syn00"))) for m in meanings]
    expected = [sorted(world.entity_type(e) for e in (m.agent, m.location, m.partner) if e >= 0) for m in meanings]
    assert [[kind for kind, _ in r] for r in reference] == expected
    for code in world.languages[1:]:
        tagged = [world.realise_tokens(m, code) for m in meanings]
        assert [sorted(entities(t)) for t in tagged] == reference, code
        info = world.describe(code)
        glue = lambda t: info["word_separator"].join(w for w, _ in t[:-1]) + t[-1][0]  # noqa: E731
        if info["script"] != "Thai":  # Thai ends a sentence without a stop token
            assert [glue(t) for t in tagged[:20]] == [world.realise(m, code) for m in meanings[:20]]
        assert all(tag in NER_TAGS for t in tagged for _, tag in t)
    lines = {c: list(world.corpus(c, 50, seed=2)) for c in ("syn01", "syn02")}
    assert lines["syn01"] == [world.realise(m, "syn01") for m in meanings[:50]]  # corpus = realised meanings


# -- tasks ----------------------------------------------------------------------------------


def modifiers(m: Meaning) -> dict[str, int]:
    """Modifier -> value, for the modifiers a meaning has (a count only when it is a numeral)."""
    out = {f: getattr(m, f) for f in ("adjective", "location", "partner", "manner") if getattr(m, f) >= 0}
    if m.count >= 2:
        out["count"] = m.count
    return out


def nli_oracle(p: Meaning, h: Meaning) -> str:
    """The labelling rules stated independently of the generator: one event (same agent,
    verb, patient, tense, number) read positively or under negation."""
    event = lambda m: (m.agent, m.verb, m.patient, m.tense, m.count == 1)  # noqa: E731
    if event(p) != event(h):
        return "neutral"
    if p.negated != h.negated:
        assert p._replace(negated=h.negated) == h
        return "contradiction"
    fp, fh = modifiers(p), modifiers(h)
    if not p.negated and any(f in fp and fp[f] != v for f, v in fh.items()):
        return "contradiction"  # another numeral or place for the same event
    # Positive: saying less is entailed. Negated: saying more is entailed.
    less, more = (fh, fp) if not p.negated else (fp, fh)
    return "entailment" if less.items() <= more.items() else "neutral"


def test_nli_labels_follow_the_meanings_and_match_across_languages(world):
    items = world.nli_items(600, seed=0)
    assert Counter(label for _, _, label in items) == {label: 200 for label in NLI_LABELS}
    for p, h, label in items:
        assert nli_oracle(p, h) == label, (p, h, label)
    labels = [label for _, _, label in items]
    for code in ("syn00", "syn07", "syn15", "syn40"):
        rows = world.nli_examples(code, 600, seed=0)
        assert [r[2] for r in rows] == labels
        assert all(p != h and "\t" not in p + h for p, h, _ in rows)


def test_ner_examples_are_parallel(world):
    ref = [entities(s) for s in world.ner_examples("syn00", 100, seed=1)]
    assert sum(len(e) for e in ref) > 100
    for code in ("syn03", "syn09", "syn15", "syn63"):
        sentences = world.ner_examples(code, 100, seed=1)
        assert [sorted(entities(s)) for s in sentences] == [sorted(e) for e in ref]
        assert all(" " not in tok and tok for s in sentences for tok, _ in s)


def test_qa_answers_are_spans_and_ids_match_across_languages(world):
    ids = None
    for code in world.languages[:20]:
        squad = world.qa_examples(code, 40, seed=0)
        qas = [(p["context"], qa) for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]]
        assert len(qas) == 40
        for context, qa in qas:
            (answer,) = qa["answers"]
            start = answer["answer_start"]
            assert answer["text"] and context[start:start + len(answer["text"])] == answer["text"], (code, qa)
        qids = [qa["id"] for _, qa in qas]
        assert len(set(qids)) == 40
        ids = ids or qids
        assert qids == ids, code
    # The roles asked are language independent, so an agent question answers a name everywhere.
    paragraphs = world.qa_items(40, seed=0)
    (meanings, questions) = paragraphs[0]
    assert all(role in ("agent", "patient", "location", "partner", "count") for _, _, role in questions)


# -- frequencies and speed ------------------------------------------------------------------


def test_zipf_frequencies(world):
    meanings = world.sample_meanings(20_000, seed=0)
    verbs = np.bincount([m.verb for m in meanings], minlength=150)
    ranks = np.argsort(np.argsort(-verbs))
    assert np.corrcoef(ranks, np.arange(150))[0, 1] > 0.9  # concept id is its frequency rank
    for code in ("syn00", "syn02", "syn15"):
        tokens = [t for m in meanings[:5000] for t, _ in world.realise_tokens(m, code)]
        counts = np.array(sorted(Counter(tokens).values(), reverse=True), dtype=float)
        share = counts[:10].sum() / counts.sum()
        slope = np.polyfit(np.log(np.arange(1, 501)), np.log(counts[:500]), 1)[0]
        assert share > 0.1 and -1.4 < slope < -0.6, (code, share, slope)
        bins = [counts[a:b].mean() for a, b in ((0, 10), (10, 100), (100, 1000))]
        assert bins[0] > 3 * bins[1] > 9 * bins[2], (code, bins)  # a long tail, not just sorted counts


def test_throughput(world):
    start = time.perf_counter()
    lines = list(world.corpus("syn04", 100_000, seed=9))
    seconds = time.perf_counter() - start
    tokens = sum(len(line.split()) for line in lines)
    print(f"\nsynthetic corpus: 100,000 sentences, {tokens:,} tokens in {seconds:.2f} s "
          f"= {tokens / seconds * 60 / 1e6:.1f}M tokens/min (syn04, one core)")
    assert len(lines) == 100_000 and all(lines)
    assert tokens > 400_000
    assert len(set(lines)) > 90_000  # mostly distinct sentences, not one template repeated


# -- files ----------------------------------------------------------------------------------


def parse_tsv3(path: Path) -> list[list[str]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(len(r) == 3 and r[2] in NLI_LABELS for r in rows), path
    return rows


def parse_conll(path: Path) -> list[list[tuple[str, str]]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        token, tag = line.split(" ")
        assert tag == "O" or tag[:2] in ("B-", "I-"), (path, line)
        current.append((token, tag))
    assert not current, f"{path}: last sentence has no blank line after it"
    return sentences


def parse_squad(path: Path) -> list[tuple[str, str, str, int]]:
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    assert data["version"] == "1.1"
    return [(qa["id"], qa["question"], ans["text"], ans["answer_start"])
            for article in data["data"] for p in article["paragraphs"] for qa in p["qas"] for ans in qa["answers"]
            if p["context"][ans["answer_start"]:].startswith(ans["text"])]


def parse_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(line.strip() and "\t" not in line for line in lines), path
    return lines


@needs_data
def test_written_files_parse_like_the_real_ones(world, tmp_path):
    assert len(parse_tsv3(DATA / "xnli" / "dev-en.tsv")) == 2490
    assert len(parse_conll(DATA / "ner" / "dev-en.txt")) > 100
    assert len(parse_squad(DATA / "xquad" / "xquad.en.json")) > 1000
    assert len(parse_lines(DATA / "ntrex" / "en_XX.txt")) == 1997

    for code in ("syn00", "syn15"):
        nli = parse_tsv3(world.write_nli(tmp_path / f"dev-{code}.tsv", code, 30))
        assert [tuple(r) for r in nli] == world.nli_examples(code, 30)
        ner = parse_conll(world.write_ner(tmp_path / f"dev-{code}.txt", code, 30))
        assert ner == world.ner_examples(code, 30)
        squad = parse_squad(world.write_qa(tmp_path / f"xquad.{code}.json", code, 30))
        assert len(squad) == 30
    written = world.write_corpora(tmp_path / "corpora", ["syn00", "syn15"], n_sentences=40, seed=1)
    assert sorted(p.name for p in (tmp_path / "corpora").iterdir()) == ["syn00.txt", "syn15.txt"]  # no temp files
    for code, path in written.items():
        assert parse_lines(path) == list(world.corpus(code, 40, seed=1))
    world.write_corpora(tmp_path / "corpora", ["syn00"], n_sentences=5, seed=1)  # replaces, not appends
    assert len(parse_lines(written["syn00"])) == 5


def test_bad_arguments_are_named(world):
    with pytest.raises(ValueError, match="-1"):
        world.sample_meanings(-1, 0)
    with pytest.raises(ValueError, match="seed"):
        SyntheticWorld(seed=-3)
    with pytest.raises(ValueError, match="'xx'"):
        world.write_corpora("/nonexistent/never-created", ["syn00", "xx"], 3)
