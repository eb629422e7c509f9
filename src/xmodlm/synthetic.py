"""Synthetic languages: the built-in corpus of N languages that all say the same things.

Design. A world (one seed) owns the meanings: Zipf-distributed concepts (nouns, verbs,
adjectives, adverbs, numerals) and named entities (people, places, organisations) combine
into `Meaning` records (an agent does a verb to a patient, with optional adjective, numeral,
place, partner, manner, tense and negation). Languages differ only in how they say a
meaning. Each `synNN` descends from one of 16 proto-languages (its family): it inherits part
of the proto lexicon through sound changes, coins the rest, and drifts a few grammar
parameters (word order, adjective and numeral order, adpositions, case, plural, tense and
negation marked by affix, particle or nothing). Words are built from phonemes and rendered
in the language's script only at the end, so related languages share roots even across
scripts, and names are transliterated rather than translated (NER labels carry over).
Meanings are sampled independently of the language, so one seed gives parallel text in every
language and task labels (NLI, NER, QA) are identical across languages. Everything is
deterministic in (world seed, language index, sample seed); a language does not depend on
how many others the world has. Standard library, numpy and the package's files module only.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from .files import atomic_write_text

N_FAMILIES = 16
DEFAULT_N_LANGUAGES = 64


def language_codes(n: int = DEFAULT_N_LANGUAGES) -> list[str]:
    """Codes of the first n synthetic languages: syn00, syn01, ..."""
    return [f"syn{i:02d}" for i in range(n)]


LANGUAGE_CODES: tuple[str, ...] = tuple(language_codes())

# Concept inventory (the same in every world and language). Index = frequency rank.
N_NOUNS, N_VERBS, N_ADJECTIVES, N_ADVERBS = 500, 150, 100, 40
N_ORG_TYPES, N_LOC_TYPES = 12, 8
N_GIVEN_NAMES, N_FAMILY_NAMES, N_NAMES = 200, 300, 500
N_PERSONS, N_ORGS, N_PLACES = 1000, 200, 300
NUMERALS = range(2, 10)
WH_WORDS = ("WHO", "WHAT", "WHERE", "HOWMANY")
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
NLI_LABELS = ("entailment", "neutral", "contradiction")
TENSES = ("PST", "PRS", "FUT")

_CONCEPTS: tuple[tuple[str, int | str], ...] = (
    tuple(("n", i) for i in range(N_NOUNS))
    + tuple(("v", i) for i in range(N_VERBS))
    + tuple(("a", i) for i in range(N_ADJECTIVES))
    + tuple(("r", i) for i in range(N_ADVERBS))
    + tuple(("num", k) for k in NUMERALS)
    + tuple(("org", i) for i in range(N_ORG_TYPES))
    + tuple(("loc", i) for i in range(N_LOC_TYPES))
    + tuple(("wh", w) for w in WH_WORDS)
)
_GRAMMEMES = ("NOM", "ACC", "LOC", "COM", "PL", "PST", "PRS", "FUT", "NEG") + tuple(
    f"{case}.{num}" for case in ("NOM", "ACC", "LOC", "COM") for num in ("SG", "PL")
)

# Sub-streams of the world seed, so that e.g. NLI items never reuse corpus sentences.
_TAG_WORLD, _TAG_PROTO, _TAG_LANG, _TAG_TEXT, _TAG_NLI, _TAG_NER, _TAG_QA, _TAG_FAMILY = range(1, 9)
_BLOCK = 2048  # meanings are drawn in fixed blocks so that a shorter sample is a prefix

# ---------------------------------------------------------------------------------------
# Phonemes and scripts. One ASCII symbol per phoneme: S=sh, Z=zh, C=ch, J=dzh, N=ng, x=kh.

CONSONANTS = "pbtdkgmnNfvszSZCJxhlrjw"
VOWELS = "aeiou"
_VOWEL_SET = frozenset(VOWELS)


def _table(spec: str) -> dict[str, tuple[str, ...]]:
    """'p=п b=б|в' -> {'p': ('п',), 'b': ('б', 'в')}; the first spelling is the usual one."""
    return {k: tuple(v.split("|")) for k, v in (item.split("=", 1) for item in spec.split())}


@dataclass(frozen=True)
class _Script:
    name: str
    kind: str  # selects the renderer
    table: dict[str, tuple[str, ...]]  # phoneme -> possible spellings (orthographies differ)
    cased: bool = False
    stop: str = "."
    qmark: str = "?"
    sep: str = " "


_DEVANAGARI = (
    "p=प b=ब t=त|ट d=द|ड k=क g=ग m=म n=न|ण N=ङ f=फ v=व s=स|ष z=ज Z=झ S=श C=च J=ज x=ख "
    "h=ह l=ल r=र j=य w=व a=अ e=ए i=इ o=ओ u=उ :a= :e=े :i=ि :o=ो :u=ु _=्"
)


def _shifted(spec: str, delta: int, overrides: str = "") -> dict[str, tuple[str, ...]]:
    # The Brahmic blocks share Devanagari's layout, so a sister script is a code-point shift.
    table = {
        k: tuple("".join(chr(ord(c) + delta) for c in v) for v in vs)
        for k, vs in _table(spec).items()
    }
    table.update(_table(overrides))
    return table


_SCRIPTS: dict[str, _Script] = {
    s.name: s
    for s in (
        _Script(
            "Latin", "alphabet", _table(
                "p=p b=b t=t d=d k=k|c|q g=g m=m n=n N=ng|ñ|ŋ|nh f=f|ph v=v|w s=s z=z "
                "S=sh|sch|ş|š|x|sz Z=zh|ž|j|ź C=ch|č|ç|tsch|c|cz J=j|dj|dž|g|dzh x=kh|x|ch|h "
                "h=h l=l r=r|rr j=y|j|i w=w|u|v a=a e=e|è|é i=i|y|ee o=o|ô u=u|ou|oo"
            ), cased=True,
        ),
        _Script(
            "Cyrillic", "alphabet", _table(
                "p=п b=б t=т d=д k=к g=г|ґ m=м n=н N=нг|ң f=ф v=в s=с z=з S=ш Z=ж C=ч "
                "J=дж|џ|ҷ x=х h=х|һ|ҳ l=л r=р j=й|ј w=в|ў|у a=а e=е|э|є i=и|і o=о u=у"
            ), cased=True,
        ),
        _Script(
            "Greek", "greek", _table(
                "p=π b=μπ|β t=τ d=ντ|δ k=κ g=γκ|γ m=μ n=ν N=γγ f=φ v=β s=σ z=ζ S=σ Z=ζ "
                "C=τσ J=τζ x=χ h=χ l=λ r=ρ j=γι|ι w=ου a=α e=ε|αι i=ι|η|υ o=ο|ω u=ου"
            ), cased=True, qmark=";",
        ),
        _Script(
            "Armenian", "alphabet", _table(
                "p=պ|փ b=բ t=տ|թ d=դ k=կ|ք g=գ m=մ n=ն N=նգ f=ֆ v=վ s=ս z=զ S=շ Z=ժ "
                "C=չ|ճ J=ջ x=խ h=հ l=լ r=ր|ռ j=յ w=վ|ւ a=ա e=ե|է i=ի o=ո|օ u=ու"
            ), cased=True, stop="։",
        ),
        _Script(
            "Georgian", "alphabet", _table(
                "p=პ|ფ b=ბ t=ტ|თ d=დ k=კ|ქ g=გ m=მ n=ნ N=ნგ f=ფ v=ვ s=ს z=ზ S=შ Z=ჟ "
                "C=ჩ|ჭ J=ჯ x=ხ h=ჰ l=ლ r=რ j=ი w=ვ a=ა e=ე i=ი o=ო u=უ"
            ),  # Mkhedruli has no case in running text
        ),
        _Script(
            "Hebrew", "hebrew", _table(
                "p=פ b=ב t=ת|ט d=ד k=כ|ק g=ג m=מ n=נ N=נ f=פ v=ב|ו s=ס|ש z=ז S=ש Z=ז "
                "C=צ J=ג x=ח h=ה l=ל r=ר j=י w=ו ^=א a= $a=ה e=י i=י o=ו u=ו"
            ),
        ),
        _Script(
            "Arabic", "abjad", _table(
                "p=پ b=ب t=ت|ط d=د|ض k=ك|ق g=غ|گ m=م n=ن N=ن f=ف v=ف|و s=س|ص z=ز|ذ S=ش "
                "Z=ژ C=چ J=ج x=خ h=ه|ح l=ل r=ر j=ي w=و ^=ا a= $a=ا e=ي i=ي o=و u=و"
            ), qmark="؟",
        ),
        _Script("Devanagari", "indic", _table(_DEVANAGARI), stop="।"),
        # Bengali has no separate va (U+09B5 is unassigned): it writes ba.
        _Script("Bengali", "indic", _shifted(_DEVANAGARI, 0x80, "v=ব w=ব"), stop="।"),
        _Script("Gujarati", "indic", _shifted(_DEVANAGARI, 0x180)),
        _Script(
            "Thai", "thai", _table(
                "p=ป|พ b=บ t=ต|ท d=ด k=ก|ค g=ก m=ม n=น N=ง f=ฟ v=ว s=ส|ซ z=ซ S=ช Z=ฌ "
                "C=จ J=จ x=ข h=ห l=ล r=ร j=ย w=ว"
            ), stop="", sep="",  # Thai writes no spaces between words and no full stop
        ),
        _Script("Hangul", "hangul", {}),
        _Script(
            "Ethiopic", "ethiopic", _table(
                "p=ፐ|ጰ b=በ t=ተ|ጠ d=ደ k=ከ|ቀ g=ገ m=መ n=ነ N=ኘ f=ፈ v=ቨ s=ሰ|ሠ z=ዘ S=ሸ "
                "Z=ዠ C=ቸ|ጨ J=ጀ x=ኸ|ኀ h=ሀ|ሐ l=ለ r=ረ j=የ w=ወ"
            ), stop="።", qmark="፧",
        ),
    )
}
# One script per family; Latin and Cyrillic recur so that unrelated languages share a script.
_FAMILY_SCRIPTS = (
    "Latin", "Latin", "Latin", "Cyrillic", "Cyrillic", "Greek", "Armenian", "Georgian",
    "Hebrew", "Arabic", "Devanagari", "Bengali", "Gujarati", "Thai", "Hangul", "Ethiopic",
)
# Scripts a daughter may switch to (as Serbian, Urdu or Romanised languages did).
_SWITCH_SCRIPTS, _SWITCH_WEIGHTS = ("Latin", "Cyrillic", "Arabic", "Devanagari"), (5, 2, 2, 1)


def _syllabify(word: str) -> list[tuple[str, str, str]]:
    """(onset, vowel, coda) triples: between vowels only the last consonant opens a syllable."""
    sylls: list[list[str]] = []
    pos = 0
    for m in re.finditer(r"[^aeiou]*[aeiou]", word):
        onset, vowel = m.group()[:-1], m.group()[-1]
        if sylls and len(onset) > 1:
            sylls[-1][2] += onset[:-1]
            onset = onset[-1]
        sylls.append([onset, vowel, ""])
        pos = m.end()
    if pos < len(word):
        if sylls:
            sylls[-1][2] += word[pos:]
        else:
            sylls.append([word[pos:], "", ""])
    return [tuple(s) for s in sylls]


def _render_alphabet(w: str, o: dict[str, str]) -> str:
    return "".join([o[c] for c in w])


def _render_greek(w: str, o: dict[str, str]) -> str:
    s = _render_alphabet(w, o)
    return s[:-1] + "ς" if s.endswith("σ") else s


def _render_abjad(w: str, o: dict[str, str]) -> str:
    # Short a is not written; other vowels are written as weak consonants; a vowel that
    # starts a syllable needs the carrier letter (alef).
    out, after_vowel, last = [], True, len(w) - 1
    for i, c in enumerate(w):
        if c in _VOWEL_SET:
            if after_vowel:
                out.append(o["^"])
            if c != "a":
                out.append(o[c])
            elif i == last and not after_vowel:
                out.append(o["$a"])
            after_vowel = True
        else:
            out.append(o[c])
            after_vowel = False
    return "".join(out)


_HEBREW_FINALS = str.maketrans("כמנפצ", "ךםןףץ")


def _render_hebrew(w: str, o: dict[str, str]) -> str:
    s = _render_abjad(w, o)
    return s[:-1] + s[-1:].translate(_HEBREW_FINALS)


def _render_indic(w: str, o: dict[str, str]) -> str:
    # Consonants carry an inherent a; other vowels are signs; clusters join with virama.
    # A final consonant is written bare, so final -C and -Ca look alike, as in Hindi.
    out, after_consonant = [], False
    for c in w:
        if c in _VOWEL_SET:
            out.append(o[":" + c] if after_consonant else o[c])
            after_consonant = False
        else:
            if after_consonant:
                out.append(o["_"])
            out.append(o[c])
            after_consonant = True
    return "".join(out)


_THAI_VOWELS = {"a": ("", "า"), "e": ("เ", ""), "i": ("", "ิ"), "o": ("โ", ""), "u": ("", "ุ")}


def _render_thai(w: str, o: dict[str, str]) -> str:
    out = []
    for onset, vowel, coda in _syllabify(w):
        cons = "".join([o[c] for c in onset])
        if vowel:
            pre, post = _THAI_VOWELS[vowel]
            cons = pre + (cons or "อ") + post
        out.append(cons + "".join([o[c] for c in coda]))
    return "".join(out)


# Hangul jamo indices: initial (L), vowel (V), final (T); block = AC00 + (L*21 + V)*28 + T.
_HANGUL_L = dict(zip("gkndtlrmbpfvsSzZJCxhN",
                     (0, 15, 2, 3, 16, 5, 5, 6, 7, 17, 17, 7, 9, 9, 12, 12, 12, 14, 18, 18, 2)))
_HANGUL_V = {"a": 0, "e": 5, "i": 20, "o": 8, "u": 13}
_HANGUL_GLIDE = {"ja": 2, "je": 7, "ji": 20, "jo": 12, "ju": 17, "wa": 9, "we": 15, "wi": 16, "wo": 14, "wu": 13}
_HANGUL_T = dict(zip("kgntdlrmpbsSzNCJxh", (1, 1, 4, 7, 7, 8, 8, 16, 17, 17, 19, 19, 19, 21, 22, 22, 27, 27)))


def _hangul(L: int, V: int, T: int = 0) -> str:
    return chr(0xAC00 + (L * 21 + V) * 28 + T)


def _hangul_spill(c: str) -> str:
    # A consonant Korean cannot place gets its own syllable with the neutral vowel eu.
    return {"j": _hangul(11, 20), "w": _hangul(11, 13)}.get(c) or _hangul(_HANGUL_L[c], 18)


def _render_hangul(w: str, o: dict[str, str]) -> str:
    out = []
    for onset, vowel, coda in _syllabify(w):
        if not vowel:
            out.extend(_hangul_spill(c) for c in onset)
            continue
        V = _HANGUL_V[vowel]
        if onset and onset[-1] in "jw":
            V, onset = _HANGUL_GLIDE[onset[-1] + vowel], onset[:-1]
        out.extend(_hangul_spill(c) for c in onset[:-1])
        L = _HANGUL_L[onset[-1]] if onset else 11
        T = _HANGUL_T.get(coda[:1], 0)
        out.append(_hangul(L, V, T))
        out.extend(_hangul_spill(c) for c in (coda[1:] if T else coda))
    return "".join(out)


_ETHIOPIC_ORDER = {"u": 1, "i": 2, "a": 3, "e": 4, "": 5, "o": 6}
_ETHIOPIC_BARE = {"a": "አ", "u": "ኡ", "i": "ኢ", "e": "ኤ", "o": "ኦ"}


def _render_ethiopic(w: str, o: dict[str, str]) -> str:
    # A syllabary: each consonant row holds the consonant with every vowel, 6th order = none.
    out, i = [], 0
    while i < len(w):
        c = w[i]
        if c in _VOWEL_SET:
            out.append(_ETHIOPIC_BARE[c])
            i += 1
            continue
        nxt = w[i + 1] if i + 1 < len(w) and w[i + 1] in _VOWEL_SET else ""
        out.append(chr(ord(o[c]) + _ETHIOPIC_ORDER[nxt]))
        i += 2 if nxt else 1
    return "".join(out)


_RENDERERS = {
    "alphabet": _render_alphabet, "greek": _render_greek, "abjad": _render_abjad,
    "hebrew": _render_hebrew, "indic": _render_indic, "thai": _render_thai,
    "hangul": _render_hangul, "ethiopic": _render_ethiopic,
}

# ---------------------------------------------------------------------------------------
# Phonology, lexicon and grammar generation.


class _Phonology(NamedTuple):
    consonants: str
    vowels: str
    shapes: tuple[str, ...]  # C consonant, V vowel, L liquid
    weights: tuple[float, ...]


def _make_word(rng: random.Random, ph: _Phonology, n_syllables: int) -> str:
    liquids = [c for c in "lr" if c in ph.consonants] or ["l"]
    out = []
    for _ in range(n_syllables):
        for slot in rng.choices(ph.shapes, ph.weights)[0]:
            pool = ph.consonants if slot == "C" else ph.vowels if slot == "V" else liquids
            out.append(rng.choice(pool))
    return "".join(out)


def _n_syllables(rng: random.Random, rank: int) -> int:
    # Frequent concepts get short words (Zipf's law of abbreviation).
    n = 1 if rank < 12 else 2 if rank < 120 else 3
    r = rng.random()
    return n + 1 if r < 0.25 else max(1, n - 1) if r < 0.4 else n


def _fresh_word(rng: random.Random, ph: _Phonology, n_syllables: int, taken: set[str]) -> str:
    for attempt in range(60):
        w = _make_word(rng, ph, n_syllables + attempt // 15)
        if w not in taken:
            return w
    raise RuntimeError(f"phonology {ph} cannot make enough distinct words")


def _draw_phonology(rng: random.Random) -> _Phonology:
    extra = [c for c in CONSONANTS if c not in "ptkmns"]
    consonants = "ptkmns" + "".join(rng.sample(extra, rng.randint(6, 14)))
    vowels = "aiu" + "".join(v for v in "eo" if rng.random() < 0.7)
    shapes = ("CV", "CVC", "V", "CLV", "VC")
    weights = (6.0, rng.uniform(0.5, 4.0), rng.uniform(0.2, 1.0), rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0))
    return _Phonology(consonants, vowels, shapes, weights)


_ORDERS, _ORDER_WEIGHTS = ("SOV", "SVO", "VSO", "VOS", "OVS", "OSV"), (36, 34, 14, 8, 4, 4)
_MORPH_KEYS = (
    "morph", "case.NOM", "case.ACC", "case.LOC", "case.COM", "plural", "tense", "neg", "agree", "nom_sg_zero",
)


def _draw_grammar(rng: random.Random, morph: str | None = None) -> dict:
    """Typological parameters; correlations (OV with postpositions) follow the world's languages."""
    morph = morph or rng.choices(("isolating", "agglutinative", "fusional"), (3, 4, 3))[0]
    order = rng.choices(_ORDERS, _ORDER_WEIGHTS)[0]
    ov = order.index("O") < order.index("V")
    g = {
        "morph": morph,
        "order": order,
        "adp": ("post" if ov else "pre") if rng.random() < 0.85 else ("pre" if ov else "post"),
        "adj": rng.choice(("AN", "NA")),
        "num": "before" if rng.random() < 0.6 else "after",
        "affix": "suffix" if rng.random() < 0.75 else "prefix",
        "wh_front": rng.random() < (0.25 if ov else 0.6),
        "given_first": rng.random() < 0.75,
        "name_mark": rng.choices(("", "-", "'"), (2, 1, 1))[0],
        "adjuncts": "".join(rng.sample("MLC", 3)),
        "present_marked": rng.random() < 0.6,
        "agree": rng.random() < 0.7,
        "nom_sg_zero": rng.random() < 0.5,
    }
    if morph == "isolating":
        g.update({
            "case.NOM": "word" if rng.random() < 0.2 else "zero",
            "case.ACC": "word" if rng.random() < 0.4 else "zero",
            "case.LOC": "word", "case.COM": "word",
            "plural": rng.choice(("zero", "word")),
            "tense": rng.choice(("word_before", "word_after")),
            "neg": "word_before" if rng.random() < 0.8 else "word_after",
        })
    elif morph == "agglutinative":
        g.update({
            "case.NOM": "zero",
            "case.ACC": "affix" if rng.random() < 0.8 else "zero",
            "case.LOC": "affix" if rng.random() < 0.9 else "word",
            "case.COM": "affix" if rng.random() < 0.9 else "word",
            "plural": "affix", "tense": "affix",
            "neg": "affix" if rng.random() < 0.7 else "word_before",
        })
    else:  # fusional: case and number share one ending, adjectives may agree
        g.update({
            "case.NOM": "affix",
            "case.ACC": "affix" if rng.random() < 0.8 else "zero",
            "case.LOC": "affix" if rng.random() < 0.5 else "word",
            "case.COM": "word" if rng.random() < 0.6 else "affix",
            "plural": "fused", "tense": "affix",
            "neg": "word_before" if rng.random() < 0.8 else "affix",
        })
    return g


def _slot_order(g: dict) -> tuple[str, ...]:
    """Clause slots: S, V, O and adjuncts M(anner), L(ocation), C(omitative)."""
    order = list(g["order"])
    if order[-1] == "V":  # verb-final languages put adjuncts before the verb
        order[-1:-1] = g["adjuncts"]
    else:
        order.extend(g["adjuncts"])
    return tuple(order)


_SOUND_CHANGES = (
    "pf", "bv", "ts", "dz", "kx", "kC", "gj", "sS", "sh", "zr", "xh", "fh", "vw", "lr", "rl",
    "wv", "Nn", "jZ", "CS", "JZ", "tC", "ao", "ou", "ei", "ie", "uo", "ae", "oa",
)


@dataclass(frozen=True)
class _Proto:
    phonology: _Phonology
    lexicon: dict
    forms: dict[str, str]
    grammar: dict
    script: str
    ortho: dict[str, str]


def _draw_ortho(rng: random.Random, script: _Script, base: dict[str, str] | None = None,
                p: float = 0.5) -> dict[str, str]:
    # Each phoneme keeps its usual (or inherited) spelling unless redrawn with probability p.
    return {
        k: (base[k] if base else vs[0]) if rng.random() >= p else rng.choice(vs)
        for k, vs in script.table.items()
    }


def _py_rng(*key: int) -> random.Random:
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint64)
    return random.Random(int(state[0]) ^ (int(state[1]) << 64))


def _zipf_cdf(n: int, s: float = 1.07, q: float = 2.7) -> np.ndarray:
    """Zipf-Mandelbrot: p(rank r) ~ 1 / (r + q)^s."""
    w = 1.0 / (np.arange(n) + q) ** s
    c = np.cumsum(w)
    return c / c[-1]


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


# ---------------------------------------------------------------------------------------
# Meanings.


class Meaning(NamedTuple):
    """One proposition: `agent` does `verb` to `patient`; -1 marks an absent modifier.

    agent, location and partner are entity ids (`SyntheticWorld.entity_type`); verb,
    patient, adjective and manner index their concept class. count: 1 singular, 0 plural
    without a numeral, 2..9 that numeral. tense: 0 past, 1 present, 2 future.
    """

    agent: int
    verb: int
    patient: int
    adjective: int = -1
    count: int = 1
    location: int = -1
    partner: int = -1
    manner: int = -1
    tense: int = 0
    negated: bool = False


_MODIFIERS = ("adjective", "count", "location", "partner", "manner")


def _present(m: Meaning) -> list[str]:
    return [f for f in _MODIFIERS if (m.count >= 2 if f == "count" else getattr(m, f) >= 0)]


def _absent(m: Meaning) -> list[str]:
    # A singular patient can take no numeral, so count is only addable to a bare plural.
    return [f for f in _MODIFIERS if (m.count == 0 if f == "count" else getattr(m, f) < 0)]


def _drop(m: Meaning, fields: Iterable[str]) -> Meaning:
    return m._replace(**{f: 0 if f == "count" else -1 for f in fields})


# A realised constituent: words, NER tags, and the [start, end) of its content words
# (without case particles), which is what a QA answer spans.
_Part = tuple[tuple[str, ...], tuple[str, ...], int, int]


class _Language:
    """One language: grammar, lexicon (phonemes), script, and memoised surface forms."""

    def __init__(self, world: SyntheticWorld, code: str, family: int, lexicon: dict, forms: dict,
                 grammar: dict, script: _Script, ortho: dict[str, str], cognates: frozenset):
        self.world, self.code, self.family = world, code, family
        self.lexicon, self.forms, self.g = lexicon, forms, grammar
        self.script, self.ortho, self.cognates = script, ortho, cognates
        self.order = _slot_order(grammar)
        self.suffixing = grammar["affix"] == "suffix"
        self._render_fn = _RENDERERS[script.kind]
        self._rendered: dict[str, str] = {}
        self._parts: dict[tuple, _Part | None] = {}

    def render(self, phonemes: str) -> str:
        s = self._rendered.get(phonemes)
        if s is None:
            s = self._rendered[phonemes] = self._render_fn(phonemes, self.ortho)
        return s

    def cap(self, s: str) -> str:
        if not self.script.cased:
            return s
        head = s[:1].upper()
        # Some capitals are two characters; keep lengths stable for QA offsets.
        return head + s[1:] if len(head) == 1 else s

    def _show(self, stem: str, affixes: list[str], name: bool) -> str:
        affixes = [a for a in affixes if a]
        if not name:
            joined = stem + "".join(affixes) if self.suffixing else "".join(reversed(affixes)) + stem
            return self.render(joined)
        # Names keep their shape; an affix is written next to them, as in Turkish Paris'te.
        mark, core = self.g["name_mark"], self.cap(self.render(stem))
        if self.suffixing:
            return core + "".join(mark + self.render(a) for a in affixes)
        return "".join(self.render(a) + mark for a in reversed(affixes)) + core

    def _np(self, content: list[tuple[str, str, str]], case: str, plural: bool = False,
            has_numeral: bool = False) -> _Part:
        """Noun phrase from ordered (stem, kind, tag) items; kind: noun adj num name wh."""
        g, forms = self.g, self.forms
        mode = g["case." + case]
        affixes: list[list[str]] = [[] for _ in content]
        kinds = [k for _, k, _ in content]
        edge = len(content) - 1 if self.suffixing else 0
        if g["plural"] == "fused":
            key = f"{case if mode == 'affix' else 'NOM'}.{'PL' if plural else 'SG'}"
            form = "" if key == "NOM.SG" and g["nom_sg_zero"] else forms[key]
            targets = [i for i, k in enumerate(kinds) if k in ("noun", "wh") or (k == "adj" and g["agree"])]
            for i in targets or [edge]:
                affixes[i].append(form)
        else:
            if plural and g["plural"] == "affix":
                for i, k in enumerate(kinds):
                    if k == "noun":
                        affixes[i].append(forms["PL"])
            if mode == "affix":
                affixes[edge].append(forms[case])
        words = [self._show(stem, a, kind == "name") for (stem, kind, _), a in zip(content, affixes)]
        tags = [tag for _, _, tag in content]
        if plural and g["plural"] == "word" and not has_numeral:
            i = kinds.index("noun") if "noun" in kinds else 0
            words.insert(i, self.render(forms["PL"]))
            tags.insert(i, "O")
        start, end = 0, len(words)
        if mode == "word":
            if g["adp"] == "pre":
                words.insert(0, self.render(forms[case]))
                tags.insert(0, "O")
                start, end = 1, end + 1
            else:
                words.append(self.render(forms[case]))
                tags.append("O")
        return tuple(words), tuple(tags), start, end

    def entity_np(self, eid: int, case: str) -> _Part:
        key = ("E", eid, case)
        part = self._parts.get(key)
        if part is None:
            kind, tokens = self.world._entities[eid]
            if kind == "PER" and not self.g["given_first"]:
                tokens = tokens[::-1]
            if kind != "PER" and self.g["adj"] == "NA":
                tokens = tokens[::-1]  # "Bank X" where adjectives follow nouns
            stems = [self.lexicon[t] if isinstance(t, tuple) else t for t in tokens]
            content = [(s, "name", ("B-" if i == 0 else "I-") + kind) for i, s in enumerate(stems)]
            part = self._parts[key] = self._np(content, case)
        return part

    def patient_np(self, noun: int, adjective: int, count: int, how_many: bool = False) -> _Part:
        key = ("O", noun, adjective, count, how_many)
        part = self._parts.get(key)
        if part is None:
            lex = self.lexicon
            content = [(lex["n", noun], "noun", "O")]
            if adjective >= 0:
                adj = (lex["a", adjective], "adj", "O")
                content = [adj] + content if self.g["adj"] == "AN" else content + [adj]
            numeral = how_many or count >= 2
            if numeral:
                num = (lex["wh", "HOWMANY"] if how_many else lex["num", count], "num", "O")
                content = [num] + content if self.g["num"] == "before" else content + [num]
            part = self._parts[key] = self._np(content, "ACC", plural=count != 1, has_numeral=numeral)
        return part

    def verb_group(self, verb: int, tense: int, negated: bool) -> _Part:
        key = ("V", verb, tense, negated)
        part = self._parts.get(key)
        if part is None:
            g, forms = self.g, self.forms
            tense_form = forms[TENSES[tense]] if tense != 1 or g["present_marked"] else ""
            before, after, affixes = [], [], []
            # Negation sits inside tense: stem-NEG-TNS (mirrored when prefixing).
            for form, mode in ((forms["NEG"] if negated else "", g["neg"]), (tense_form, g["tense"])):
                if not form:
                    continue
                if mode == "affix":
                    affixes.append(form)
                elif mode == "word_before":
                    before.insert(0, self.render(form))
                else:
                    after.append(self.render(form))
            words = (*before, self._show(self.lexicon["v", verb], affixes, False), *after)
            part = self._parts[key] = (words, ("O",) * len(words), 0, len(words))
        return part

    def word_part(self, concept: tuple) -> _Part:
        part = self._parts.get(concept)
        if part is None:
            part = self._parts[concept] = ((self.render(self.lexicon[concept]),), ("O",), 0, 1)
        return part

    def clause(self, m: Meaning, wh: str | None = None
               ) -> tuple[list[str], list[str], dict[str, tuple[int, int]]]:
        """Words, tags and per-slot content spans; wh names the role a question asks for."""
        parts = {
            "S": self.entity_np(m.agent, "NOM"),
            "V": self.verb_group(m.verb, m.tense, m.negated),
            "O": self.patient_np(m.patient, m.adjective, m.count),
            "M": self.word_part(("r", m.manner)) if m.manner >= 0 else None,
            "L": self.entity_np(m.location, "LOC") if m.location >= 0 else None,
            "C": self.entity_np(m.partner, "COM") if m.partner >= 0 else None,
        }
        order = self.order
        if wh is not None:
            slot = _WH_SLOT[wh]
            if wh == "agent":
                parts["S"] = self._np([(self.lexicon["wh", "WHO"], "wh", "O")], "NOM")
            elif wh == "partner":
                parts["C"] = self._np([(self.lexicon["wh", "WHO"], "wh", "O")], "COM")
            elif wh == "patient":
                parts["O"] = self._np([(self.lexicon["wh", "WHAT"], "wh", "O")], "ACC")
            elif wh == "location":
                parts["L"] = self.word_part(("wh", "WHERE"))
            else:
                parts["O"] = self.patient_np(m.patient, m.adjective, m.count, how_many=True)
            if self.g["wh_front"]:
                order = (slot,) + tuple(s for s in order if s != slot)
        words: list[str] = []
        tags: list[str] = []
        spans: dict[str, tuple[int, int]] = {}
        for slot in order:
            part = parts[slot]
            if part is not None:
                spans[slot] = (len(words) + part[2], len(words) + part[3])
                words.extend(part[0])
                tags.extend(part[1])
        if words:
            words[0] = self.cap(words[0])
        return words, tags, spans

    def sentence(self, m: Meaning) -> str:
        words = self.clause(m)[0]
        return self.script.sep.join(words) + self.script.stop


_WH_SLOT = {"agent": "S", "patient": "O", "count": "O", "location": "L", "partner": "C"}


# ---------------------------------------------------------------------------------------
# The world.


class SyntheticWorld:
    """A seeded world of meanings and `n_languages` languages that express them.

    Cheap to construct: proto-languages and languages are built (and cached) on first use.
    """

    def __init__(self, seed: int = 0, n_languages: int = DEFAULT_N_LANGUAGES):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if n_languages < 1:
            raise ValueError(f"n_languages must be >= 1, got {n_languages}")
        self.seed = seed
        self._codes = language_codes(n_languages)
        self._index = {c: i for i, c in enumerate(self._codes)}
        self._protos: dict[int, _Proto] = {}
        self._langs: dict[str, _Language] = {}
        rng = _py_rng(seed, _TAG_WORLD)
        scripts = list(_FAMILY_SCRIPTS)
        rng.shuffle(scripts)
        self._family_scripts = scripts
        # Later languages join families unevenly: a few large families, several small ones.
        ranks = list(range(N_FAMILIES))
        rng.shuffle(ranks)
        self._family_weights = [1.0 / (r + 1) ** 0.8 for r in ranks]
        self._build_entities(rng)
        self._build_samplers(rng)

    # -- world tables --------------------------------------------------------------------

    def _build_entities(self, rng: random.Random) -> None:
        ph = _Phonology(CONSONANTS, VOWELS, ("CV", "CVC", "V", "CLV"), (5, 3, 1, 1))
        taken: set[str] = set()
        n_names = N_GIVEN_NAMES + N_FAMILY_NAMES + N_NAMES
        names = [_fresh_word(rng, ph, rng.randint(2, 3), taken) for _ in range(n_names)]
        given, surnames, other = names[:N_GIVEN_NAMES], names[N_GIVEN_NAMES:-N_NAMES], names[-N_NAMES:]
        entities: list[tuple[str, tuple]] = []
        people: set[tuple] = set()
        while len(people) < N_PERSONS:
            person = (rng.choice(given),) if rng.random() < 0.15 else (rng.choice(given), rng.choice(surnames))
            if person not in people:
                people.add(person)
                entities.append(("PER", person))
        # Organisation and place names are distinct words, so one name keeps one NER type; an
        # optional type word ("bank", "river") is a common noun of each language.
        names = rng.sample(other, N_ORGS + N_PLACES)
        for name in names[:N_ORGS]:
            entities.append(("ORG", (name, ("org", rng.randrange(N_ORG_TYPES))) if rng.random() < 0.7 else (name,)))
        for name in names[N_ORGS:]:
            entities.append(("LOC", (name, ("loc", rng.randrange(N_LOC_TYPES))) if rng.random() < 0.2 else (name,)))
        self._entities = entities

    def _build_samplers(self, rng: random.Random) -> None:
        self._cdf = {
            "PER": _zipf_cdf(N_PERSONS), "ORG": _zipf_cdf(N_ORGS), "LOC": _zipf_cdf(N_PLACES),
            "v": _zipf_cdf(N_VERBS), "a": _zipf_cdf(N_ADJECTIVES), "r": _zipf_cdf(N_ADVERBS),
            "num": _zipf_cdf(len(NUMERALS), s=1.5, q=1.0),
            "tense": np.cumsum([0.5, 0.3, 0.2]),
        }
        # Selectional restrictions: each verb takes objects from 1-3 of 10 noun classes, which
        # gives a language model structure to learn beyond word frequencies.
        noun_weights = 1.0 / (np.arange(N_NOUNS) + 2.7) ** 1.07
        self._objects, self._object_cdf = [], []
        for _ in range(N_VERBS):
            classes = rng.sample(range(10), rng.randint(1, 3))
            nouns = np.flatnonzero(np.isin(np.arange(N_NOUNS) % 10, classes))
            c = np.cumsum(noun_weights[nouns])
            self._objects.append(nouns)
            self._object_cdf.append(c / c[-1])

    def entity_type(self, eid: int) -> str:
        """'PER', 'ORG' or 'LOC'."""
        return self._entities[eid][0]

    # -- languages -----------------------------------------------------------------------

    @property
    def languages(self) -> list[str]:
        return list(self._codes)

    def _proto(self, family: int) -> _Proto:
        proto = self._protos.get(family)
        if proto is None:
            rng = _py_rng(self.seed, _TAG_PROTO, family)
            ph = _draw_phonology(rng)
            taken: set[str] = set()
            lexicon = {}
            for key in _CONCEPTS:
                rank = 0 if key[0] == "wh" else key[1] - 2 if key[0] == "num" else key[1]
                lexicon[key] = _fresh_word(rng, ph, _n_syllables(rng, rank), taken)
                taken.add(lexicon[key])
            short = _Phonology(ph.consonants, ph.vowels, ("V", "VC", "CV", "CVC"), (1, 1, 3, 1))
            forms: dict[str, str] = {}
            for gram in _GRAMMEMES:
                forms[gram] = _fresh_word(rng, short, 1, taken | set(forms.values()))
            script = _SCRIPTS[self._family_scripts[family]]
            proto = self._protos[family] = _Proto(
                ph, lexicon, forms, _draw_grammar(rng), script.name, _draw_ortho(rng, script)
            )
        return proto

    def _language(self, code: str) -> _Language:
        lang = self._langs.get(code)
        if lang is None:
            if code not in self._index:
                raise ValueError(
                    f"unknown language {code!r}: this world has {self._codes[0]}..{self._codes[-1]} "
                    f"(n_languages={len(self._codes)})"
                )
            lang = self._langs[code] = self._build_language(code, self._index[code])
        return lang

    def _build_language(self, code: str, index: int) -> _Language:
        rng = _py_rng(self.seed, _TAG_LANG, index)
        family = self._family_of(index)
        proto = self._proto(family)
        # Sound changes: a handful of regular substitutions applied to every inherited word.
        inventory = proto.phonology.consonants + proto.phonology.vowels
        pairs = [p for p in rng.sample(_SOUND_CHANGES, rng.randint(2, 5)) if p[0] in inventory]
        change = str.maketrans({a: b for a, b in pairs})
        apocope = rng.random() < 0.3
        ph = proto.phonology
        ph = ph._replace(
            consonants="".join(sorted(set(ph.consonants.translate(change)) - _VOWEL_SET)),
            vowels="".join(sorted(set(ph.vowels.translate(change)) & _VOWEL_SET)) or "a",
        )

        def evolve(w: str) -> str:
            w = w.translate(change)
            if apocope and len(w) >= 4 and w[-1] in _VOWEL_SET and w[-2] not in _VOWEL_SET:
                w = w[:-1]
            return w

        retention = rng.uniform(0.55, 0.9)
        lexicon, taken, cognates = {}, set(), set()
        for key in _CONCEPTS:
            w = evolve(proto.lexicon[key]) if rng.random() < retention else ""
            if w and w not in taken:
                cognates.add(key)
            else:
                rank = 0 if key[0] == "wh" else key[1] - 2 if key[0] == "num" else key[1]
                w = _fresh_word(rng, ph, _n_syllables(rng, rank), taken)
            lexicon[key] = w
            taken.add(w)
        short = ph._replace(shapes=("V", "VC", "CV", "CVC"), weights=(1, 1, 3, 1))
        forms = {}
        for gram in _GRAMMEMES:
            w = proto.forms[gram].translate(change) if rng.random() < 0.85 else ""
            forms[gram] = w if w and w not in forms.values() else _fresh_word(rng, short, 1, set(forms.values()))

        fresh = _draw_grammar(rng, None if rng.random() < 0.1 else proto.grammar["morph"])
        grammar = {}
        for k, v in proto.grammar.items():
            switch = fresh["morph"] != proto.grammar["morph"] if k in _MORPH_KEYS else rng.random() < 0.12
            grammar[k] = fresh[k] if switch else v
        if rng.random() < 0.12:
            script = _SCRIPTS[rng.choices(_SWITCH_SCRIPTS, _SWITCH_WEIGHTS)[0]]
        else:
            script = _SCRIPTS[proto.script]
        if script.name == proto.script:
            ortho = _draw_ortho(rng, script, proto.ortho, p=0.15)
        else:
            ortho = _draw_ortho(rng, script)
        return _Language(self, code, family, lexicon, forms, grammar, script, ortho, frozenset(cognates))

    def describe(self, code: str) -> dict:
        """Script, word order, morphology and family of a language (JSON-serialisable)."""
        lang = self._language(code)
        g = lang.g
        return {
            "code": code,
            "family": f"fam{lang.family:02d}",
            "script": lang.script.name,
            "word_order": g["order"],
            "adjective_order": "adjective-noun" if g["adj"] == "AN" else "noun-adjective",
            "numeral_order": "numeral-noun" if g["num"] == "before" else "noun-numeral",
            "adposition": "preposition" if g["adp"] == "pre" else "postposition",
            "morphology": g["morph"],
            "affixes": g["affix"],
            "wh_fronting": g["wh_front"],
            "word_separator": lang.script.sep,
            "related": self.related(code),
        }

    def related(self, code: str) -> list[str]:
        """Same-family languages of this world, most similar (most cognates) first."""
        family = self._language(code).family
        others = [c for c in self._codes if c != code and self._family_of(self._index[c]) == family]
        return sorted(others, key=lambda c: (-self.similarity(code, c), c))

    def _family_of(self, index: int) -> int:
        # The first 16 languages found one family each, so any few of them are unrelated.
        if index < N_FAMILIES:
            return index
        return _py_rng(self.seed, _TAG_FAMILY, index).choices(range(N_FAMILIES), self._family_weights)[0]

    def similarity(self, a: str, b: str) -> float:
        """Share of the vocabulary both languages inherited from one proto-language (0 across families)."""
        la, lb = self._language(a), self._language(b)
        if la.family != lb.family:
            return 0.0
        return len(la.cognates & lb.cognates) / len(_CONCEPTS)

    def lexicon(self, code: str, phonemic: bool = False) -> dict[str, str]:
        """Concept -> word: n(oun), v(erb), a(djective), r (adverb), num, org/loc (name types),
        wh; 'n0' is the most frequent noun. phonemic=True gives the phonemes (see CONSONANTS)."""
        lang = self._language(code)
        return {f"{k[0]}{k[1]}": (w if phonemic else lang.render(w)) for k, w in lang.lexicon.items()}

    # -- meanings ------------------------------------------------------------------------

    def _block(self, stream: int, seed: int, b: int) -> list[Meaning]:
        rng = np.random.default_rng([self.seed, stream, seed, b])
        B, cdf = _BLOCK, self._cdf
        n_per, n_org = N_PERSONS, N_ORGS
        person = _draw(cdf["PER"], rng.random(B))
        org = n_per + _draw(cdf["ORG"], rng.random(B))
        agent = np.where(rng.random(B) < 0.2, org, person)
        verb = _draw(cdf["v"], rng.random(B))
        u = rng.random(B)
        patient = np.empty(B, dtype=np.int64)
        for v in np.unique(verb):
            rows = verb == v
            patient[rows] = self._objects[v][_draw(self._object_cdf[v], u[rows])]
        adjective = np.where(rng.random(B) < 0.35, _draw(cdf["a"], rng.random(B)), -1)
        r = rng.random(B)
        numeral = NUMERALS[0] + _draw(cdf["num"], rng.random(B))
        count = np.where(r < 0.55, 1, np.where(r < 0.75, 0, numeral))
        location = np.where(rng.random(B) < 0.5, n_per + n_org + _draw(cdf["LOC"], rng.random(B)), -1)
        partner = np.where(rng.random(B) < 0.2, _draw(cdf["PER"], rng.random(B)), -1)
        partner[partner == agent] = -1
        manner = np.where(rng.random(B) < 0.25, _draw(cdf["r"], rng.random(B)), -1)
        tense = _draw(cdf["tense"], rng.random(B))
        negated = rng.random(B) < 0.15
        fields = (agent, verb, patient, adjective, count, location, partner, manner, tense, negated)
        columns = [c.tolist() for c in fields]
        return list(map(Meaning._make, zip(*columns)))

    def _meanings(self, stream: int, seed: int, n: int | None = None) -> Iterator[Meaning]:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        b = 0
        while n is None or b * _BLOCK < n:
            block = self._block(stream, seed, b)
            if n is not None and (b + 1) * _BLOCK > n:
                block = block[: n - b * _BLOCK]
            yield from block
            b += 1

    def sample_meanings(self, n: int, seed: int = 0) -> list[Meaning]:
        """n meanings; deterministic, and sample_meanings(k, s) is a prefix of (n, s) for k < n."""
        _check_count(n)
        return list(self._meanings(_TAG_TEXT, seed, n))

    def _sample_extra(self, rng: random.Random, field: str, agent: int) -> int:
        """A value for a modifier that NLI adds to a meaning."""
        draw = lambda cls: int(_draw(self._cdf[cls], np.array([rng.random()]))[0])  # noqa: E731
        if field == "count":
            return rng.choice(NUMERALS)
        if field in ("adjective", "manner"):
            return draw("a" if field == "adjective" else "r")
        if field == "location":
            return N_PERSONS + N_ORGS + draw("LOC")
        while True:  # partner: anyone but the agent
            p = draw("PER")
            if p != agent:
                return p

    def _add(self, rng: random.Random, m: Meaning, fields: Iterable[str]) -> Meaning:
        return m._replace(**{f: self._sample_extra(rng, f, m.agent) for f in fields})

    # -- realisation ---------------------------------------------------------------------

    def realise(self, meaning: Meaning, code: str) -> str:
        """The sentence that says `meaning` in language `code`."""
        return self._language(code).sentence(meaning)

    def realise_tokens(self, meaning: Meaning, code: str) -> list[tuple[str, str]]:
        """Words with IOB2 entity tags (final punctuation is its own token, tagged O)."""
        lang = self._language(code)
        words, tags, _ = lang.clause(meaning)
        pairs = list(zip(words, tags))
        if lang.script.stop:
            pairs.append((lang.script.stop, "O"))
        return pairs

    def corpus(self, code: str, n_sentences: int, seed: int = 0) -> Iterator[str]:
        """Monolingual sentences; the same seed gives line-by-line parallel text in every language."""
        _check_count(n_sentences)
        sentence = self._language(code).sentence
        for m in self._meanings(_TAG_TEXT, seed, n_sentences):
            yield sentence(m)

    def write_corpora(self, out_dir: str | Path, codes: Iterable[str] | None = None,
                      n_sentences: int = 10_000, seed: int = 0) -> dict[str, Path]:
        """<out_dir>/<code>.txt, one sentence a line (as the real per-language corpora)."""
        codes = list(self._codes if codes is None else codes)
        for code in codes:
            self._language(code)  # fail before writing anything
        out = {}
        for code in codes:
            lines = (s + "\n" for s in self.corpus(code, n_sentences, seed))
            out[code] = _atomic_write(Path(out_dir) / f"{code}.txt", lines)
        return out

    # -- NLI -----------------------------------------------------------------------------

    def nli_items(self, n: int, seed: int = 0) -> list[tuple[Meaning, Meaning, str]]:
        """(premise, hypothesis, label) meanings, labels balanced; shared by every language.

        entailment: the hypothesis drops modifiers of a positive premise ("X bought red
        apples" -> "X bought apples"), or adds modifiers under negation ("X did not buy
        apples" -> "X did not buy red apples"). neutral: the converse of each, or another
        event with the same agent. contradiction: flipped negation, or (positive premise)
        another numeral or another place for the same event.
        """
        _check_count(n)
        rng = _py_rng(self.seed, _TAG_NLI, seed)
        labels = [i % 3 for i in range(n)]
        rng.shuffle(labels)
        pool = self._meanings(_TAG_NLI, seed)
        items = []
        for label in labels:
            p = next(pool)
            present, absent = _present(p), _absent(p)
            if label == 2:
                options = ["negation"] * 3
                if not p.negated and p.count >= 2:
                    options.append("count")
                if not p.negated and p.location >= 0:
                    options.append("location")
                how = rng.choice(options)
                if how == "negation":
                    h = p._replace(negated=not p.negated)
                elif how == "count":
                    h = p._replace(count=rng.choice([k for k in NUMERALS if k != p.count]))
                else:
                    h = p._replace(location=self._sample_extra(rng, "location", p.agent))
                    while h.location == p.location:
                        h = h._replace(location=self._sample_extra(rng, "location", p.agent))
            elif label == 1 and rng.random() < 0.3:
                other = next(pool)
                while other.verb == p.verb:
                    other = next(pool)
                h = other._replace(agent=p.agent, partner=-1 if other.partner == p.agent else other.partner)
            else:
                # Entailment drops under a positive premise and adds under negation;
                # neutral is the other way round.
                drop = (label == 0) != p.negated
                if drop:
                    if not present:
                        p = self._add(rng, p, [rng.choice(absent)])
                        present = _present(p)
                    h = _drop(p, rng.sample(present, rng.randint(1, len(present))))
                else:
                    if not absent:
                        p = _drop(p, [rng.choice(present)])
                        absent = _absent(p)
                    h = self._add(rng, p, rng.sample(absent, rng.randint(1, min(2, len(absent)))))
            items.append((p, h, NLI_LABELS[label]))
        return items

    def nli_examples(self, code: str, n: int, seed: int = 0) -> list[tuple[str, str, str]]:
        lang = self._language(code)
        return [(lang.sentence(p), lang.sentence(h), label) for p, h, label in self.nli_items(n, seed)]

    def write_nli(self, path: str | Path, code: str, n: int, seed: int = 0) -> Path:
        """XNLI TSV as in XTREME's copy: premise<TAB>hypothesis<TAB>label, no header."""
        rows = self.nli_examples(code, n, seed)
        return _atomic_write(Path(path), (f"{p}\t{h}\t{label}\n" for p, h, label in rows))

    # -- NER -----------------------------------------------------------------------------

    def ner_examples(self, code: str, n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
        _check_count(n)
        self._language(code)
        return [self.realise_tokens(m, code) for m in self._meanings(_TAG_NER, seed, n)]

    def write_ner(self, path: str | Path, code: str, n: int, seed: int = 0) -> Path:
        """CoNLL: `token tag` a line, a blank line after each sentence."""
        sentences = self.ner_examples(code, n, seed)
        return _atomic_write(Path(path), ("".join(f"{t} {tag}\n" for t, tag in s) + "\n" for s in sentences))

    # -- QA ------------------------------------------------------------------------------

    def qa_items(self, n: int, seed: int = 0) -> list[tuple[tuple[Meaning, ...], list[tuple[str, int, str]]]]:
        """Paragraphs (3-5 meanings) with questions (id, sentence index, role asked for).

        Within a paragraph agents and verbs are distinct, so every question has one answer.
        """
        _check_count(n)
        rng = _py_rng(self.seed, _TAG_QA, seed)
        pool = self._meanings(_TAG_QA, seed)
        paragraphs, asked = [], 0
        while asked < n:
            chosen: list[Meaning] = []
            size = rng.randint(3, 5)
            for m in pool:
                if all(m.agent != c.agent and m.verb != c.verb for c in chosen):
                    chosen.append(m)
                    if len(chosen) == size:
                        break
            roles = [(j, role) for j, m in enumerate(chosen) for role in _answerable(m)]
            rng.shuffle(roles)
            take = min(rng.randint(1, 4), n - asked, len(roles))
            questions = [
                (f"syn{self.seed}-{seed}-{asked + t:06d}", j, role) for t, (j, role) in enumerate(roles[:take])
            ]
            paragraphs.append((tuple(chosen), questions))
            asked += take
        return paragraphs

    def qa_examples(self, code: str, n: int, seed: int = 0) -> dict:
        """SQuAD v1.1 dict with n questions; ids and answers' roles are the same in every language."""
        lang = self._language(code)
        sep, stop, qmark = lang.script.sep, lang.script.stop, lang.script.qmark
        articles = []
        for p_index, (meanings, questions) in enumerate(self.qa_items(n, seed)):
            texts, starts, spans = [], [], []
            offset = 0
            for m in meanings:
                words, _, slot_spans = lang.clause(m)
                word_starts, pos = [], offset
                for w in words:
                    word_starts.append(pos)
                    pos += len(w) + len(sep)
                texts.append(sep.join(words) + stop)
                starts.append(word_starts)
                spans.append((words, slot_spans))
                offset += len(texts[-1]) + 1  # sentences are joined by one space
            context = " ".join(texts)
            qas = []
            for qid, j, role in questions:
                words, slot_spans = spans[j]
                if role == "count":  # the numeral is the first or last content word of the object
                    a, b = slot_spans["O"]
                    a = a if lang.g["num"] == "before" else b - 1
                    b = a + 1
                else:
                    a, b = slot_spans[_WH_SLOT[role]]
                start = starts[j][a]
                text = context[start: starts[j][b - 1] + len(words[b - 1])]
                q_words = lang.clause(meanings[j], wh=role)[0]
                qas.append({
                    "answers": [{"answer_start": start, "text": text}],
                    "id": qid,
                    "question": sep.join(q_words) + qmark,
                })
            if p_index % 5 == 0:
                articles.append({"paragraphs": [], "title": f"synthetic_{self.seed}_{seed}_{p_index // 5}"})
            articles[-1]["paragraphs"].append({"context": context, "qas": qas})
        return {"data": articles, "version": "1.1"}

    def write_qa(self, path: str | Path, code: str, n: int, seed: int = 0) -> Path:
        """SQuAD v1.1 JSON, as the XQuAD files."""
        text = json.dumps(self.qa_examples(code, n, seed), ensure_ascii=False)
        return _atomic_write(Path(path), [text])


def _answerable(m: Meaning) -> list[str]:
    roles = ["agent", "patient"]
    if m.location >= 0:
        roles.append("location")
    if m.partner >= 0:
        roles.append("partner")
    if m.count >= 2:
        roles.append("count")
    return roles


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"number of items must be >= 0, got {n}")


def _atomic_write(path: Path, chunks: Iterable[str]) -> Path:
    """Write text atomically (readers never see half a file), with "\n" line ends on every platform."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, chunks, newline="\n")
