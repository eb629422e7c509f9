"""Fill-mask from the command line, with per-text language choice (``--lang auto``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..pipeline import Pipeline
from ..settings import setting


@dataclass
class FillMaskSettings:
    model: str = setting("", "masked-LM checkpoint directory (or hub id)")
    text: list[str] = setting([], "a text with <mask>", split=False)
    lang: str = setting("auto", "language code for every text, or 'auto' to identify each text's language")
    fallback: str | None = setting(None, "with --lang auto: a code, or 'closest', for languages without a module")
    top_k: int = setting(5, "predictions per <mask>", low=1)


def run(s: FillMaskSettings) -> list:
    texts = [t.strip() for t in s.text if t.strip()]
    if not s.model or not texts:
        raise ValueError("usage: xmodlm fill-mask --model DIR --text 'a <mask> b' [--lang auto|CODE]")
    pipe = Pipeline.from_pretrained(s.model, fallback=s.fallback)
    codes = pipe.languages(texts, s.lang)
    results = pipe.fill_mask(texts, codes, top_k=s.top_k)
    for text, code, masks in zip(texts, codes, results):
        print(json.dumps({"text": text, "lang": code,
                          "masks": [[{"token": t, "p": round(p, 4)} for t, p in m] for m in masks]},
                         ensure_ascii=False))
    return results
