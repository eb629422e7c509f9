"""Fill-mask from the command line, with per-text language choice (``--lang auto``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..pipeline import Pipeline
from ..settings import setting


@dataclass
class FillMaskSettings:
    model: str = setting("", "masked-LM checkpoint directory (or hub id)", required=True)
    text: list[str] = setting([], "a text with <mask>", split=False, required=True)
    lang: str = setting("auto", "language code for every text, or 'auto' to identify each text's language")
    fallback: str | None = setting(None, "with --lang auto: a code, or 'closest', for languages without a module")
    top_k: int = setting(5, "predictions per <mask>", low=1)
    json: bool = setting(False, "one JSON object a line (text, lang, masks: [[{token, word, p}]]) instead of text")


def word(piece: str) -> str:
    """A vocabulary piece as text: the word-start marker (SentencePiece's U+2581) is a space."""
    return piece.replace("\u2581", " ").strip() or piece


def format_prediction(text: str, code: str, masks: list[list[tuple[str, float]]]) -> str:
    """The text with the best word in each <mask>, then each mask's candidates with their probabilities."""
    filled = text
    for candidates in masks:
        filled = filled.replace("<mask>", f"[{word(candidates[0][0])}]" if candidates else "[?]", 1)
    lines = [f"{code}: {filled}"]
    for i, candidates in enumerate(masks, 1):
        shown = "  ".join(f"{word(piece)} {p:.1%}" for piece, p in candidates)
        lines.append(f"  <mask> {i}: {shown}")
    return "\n".join(lines)


def run(s: FillMaskSettings) -> list:
    texts = [t.strip() for t in s.text if t.strip()]
    if not s.model or not texts:
        raise ValueError("usage: xmodlm fill-mask --model DIR --text 'a <mask> b' [--lang auto|CODE]")
    pipe = Pipeline.from_pretrained(s.model, fallback=s.fallback)
    codes = pipe.languages(texts, s.lang)
    results = pipe.fill_mask(texts, codes, top_k=s.top_k)
    for text, code, masks in zip(texts, codes, results):
        if s.json:
            print(json.dumps({"text": text, "lang": code, "masks": [[{"token": t, "word": word(t), "p": round(p, 4)}
                                                                     for t, p in m] for m in masks]},
                             ensure_ascii=False))
        else:
            print(format_prediction(text, code, masks))
    return results
