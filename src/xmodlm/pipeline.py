"""Text in, predictions out: a model with its tokenizer, and ``lang="auto"`` language choice.

The model itself routes by language ids; choosing them from raw text (py3langid, mapped to the
model's codes) needs the text, so it lives here rather than in ``model.forward``.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from . import embeddings as emb_mod
from . import languages as lang_mod
from . import tokenizer as tok_mod
from .model import XmodForMaskedLM, XmodPreTrainedModel, load_pretrained
from .tasks import PAD_ID


class Pipeline:
    """``Pipeline.from_pretrained(dir)``; ``lang`` is "auto", one code for all texts, or one code per text.

    ``fallback`` applies to "auto" when a text's language has no module: a code of the model, or
    "closest" (xmodlm.languages.closest_module); without one, such a text is an error naming the
    detected language.
    """

    def __init__(self, model: XmodPreTrainedModel, tokenizer, fallback: str | None = None):
        self.model, self.tokenizer, self.fallback = model.eval(), tokenizer, fallback

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, fallback: str | None = None) -> "Pipeline":
        model, tok = load_pretrained(name_or_path), tok_mod.load_model_tokenizers(name_or_path)
        tok_mod.check_tokenizer_fits(tok_mod.shared_tokenizer(tok), model.config, str(name_or_path),
                                     str(name_or_path))
        return cls(model, tok, fallback)

    def languages(self, texts: Sequence[str], lang: str | Sequence[str] = "auto") -> list[str]:
        if isinstance(lang, str):
            if lang == "auto":
                return lang_mod.resolve_auto_lang_ids(list(texts), self.model, self.fallback)
            return [lang_mod.resolve_code(lang, self.model.config.languages)] * len(texts)
        if len(lang) != len(texts):
            raise ValueError(f"{len(lang)} language codes for {len(texts)} texts")
        return [lang_mod.resolve_code(code, self.model.config.languages) for code in lang]

    def tokenize(self, texts: Sequence[str], max_length: int | None = None,
                 langs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """input_ids (``<s> text </s>``, padded) and attention_mask of the texts, in one batch; ``langs`` (one code
        per text) chooses the tokenizer of a language that has its own vocabulary."""
        limit = max_length or emb_mod.token_limit(self.model.config)
        rows = emb_mod.tokenize(self.tokenizer, list(texts), limit, langs)
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def encode(self, texts: Sequence[str], lang: str | Sequence[str] = "auto", layer: int | None = None,
               pooling: str = "mean", normalize: bool = True, batch_size: int = 32, max_length: int | None = None,
               precision: str = "fp32", progress: bool = False) -> torch.Tensor:
        """(N, hidden) float32 sentence embeddings (xmodlm.embeddings): the states of ``layer`` (default: the
        middle one, embeddings.default_layer), mean-pooled over each text's tokens (or "cls"), unit length when
        ``normalize``; each text through its language's module. Texts are batched by length; ``precision="bf16"``
        runs the encoder in bf16 autocast. (Token ids of texts: ``tokenize``.)"""
        return emb_mod.embed_texts(self.model, self.tokenizer, texts, self.languages(texts, lang), layers=[layer],
                                   pooling=pooling, normalize=normalize, batch_size=batch_size,
                                   max_length=max_length, precision=precision, progress=progress)[0]

    def embed(self, texts: Sequence[str], lang: str | Sequence[str] = "auto") -> torch.Tensor:
        """(N, hidden) mean of the last layer over each text's tokens, not normalised (``encode`` with layer=-1)."""
        return self.encode(texts, lang, layer=-1, normalize=False)

    @torch.no_grad()
    def fill_mask(self, texts: Sequence[str], lang: str | Sequence[str] = "auto",
                  top_k: int = 5) -> list[list[list[tuple[str, float]]]]:
        """For each text, for each <mask> in it, the top_k (piece, probability) predictions."""
        if not isinstance(self.model, XmodForMaskedLM):
            raise ValueError(f"fill_mask needs a masked-LM checkpoint; this one is {type(self.model).__name__}")
        mask_id = tok_mod.mask_id(tok_mod.shared_tokenizer(self.tokenizer))  # the same id in every tokenizer
        vocab = self.model.config.vocab_size
        if not 1 <= top_k <= vocab:
            raise ValueError(f"top_k={top_k}; it must be between 1 and the vocabulary size, {vocab}")
        codes = self.languages(texts, lang)
        batch = self.tokenize(texts, langs=codes)
        full = [tok_mod.for_language(self.tokenizer, c).encode(t, add_special_tokens=False)
                for t, c in zip(texts, codes)]
        for i, (text, encoding, ids) in enumerate(zip(texts, full, batch["input_ids"])):
            if encoding.ids.count(mask_id) > int((ids == mask_id).sum()):
                raise ValueError(f"text {i} ({text[:40]!r}...): a <mask> lies past the model's maximum length of "
                                 f"{ids.shape[0]} tokens ({len(encoding.ids) + 2} with <s> and </s>); shorten the text")
            if mask_id not in encoding.ids:
                raise ValueError(f"text {i} ({text[:40]!r}) has no <mask>")
        logits = self.model(**batch, lang_ids=codes).logits
        results = []
        for row, ids, code in zip(logits.softmax(-1), batch["input_ids"], codes):
            tok = tok_mod.for_language(self.tokenizer, code)
            per_mask = []
            for position in (ids == mask_id).nonzero().flatten().tolist():
                probs, pieces = row[position].topk(top_k)
                per_mask.append([(tok.id_to_token(int(p)), float(q)) for q, p in zip(probs, pieces)])
            results.append(per_mask)
        return results
