"""Extractive QA in SQuAD v1.1 JSON (XQuAD, MLQA, TyDiQA-GoldP): windows, spans, EM / F1."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from xmodlm import metrics
from xmodlm.model import XmodForQuestionAnswering
from xmodlm.tasks import BOS_ID, EOS_ID, Outputs, Setup, Task, encode_texts, inputs, prepare_tokenizer


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)  # character offsets into context
    title: str = ""


def load(path: str | Path) -> list[Example]:
    """Read a SQuAD v1.1 file: data[].paragraphs[].{context, qas[].{id, question, answers}}."""
    with open(path, encoding="utf-8-sig") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: expected SQuAD JSON, got invalid JSON ({e.msg})") from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'data' list (SQuAD v1.1)")
    examples = []
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(_get(article, "paragraphs", path, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _get(paragraph, "context", path, where)
            for q, qa in enumerate(_get(paragraph, "qas", path, where)):
                where_q = f"{where}.qas[{q}]"
                texts, starts = [], []
                for i, answer in enumerate(_get(qa, "answers", path, where_q)):
                    texts.append(_get(answer, "text", path, f"{where_q}.answers[{i}]"))
                    starts.append(int(_get(answer, "answer_start", path, f"{where_q}.answers[{i}]")))
                qid, question = str(_get(qa, "id", path, where_q)), _get(qa, "question", path, where_q)
                examples.append(Example(qid, question, context, texts, starts, article.get("title", "")))
    return examples


def _get(node, key: str, path, where: str):
    if not isinstance(node, dict) or key not in node:
        raise ValueError(f"{path}: {where} has no {key!r} field (SQuAD v1.1 format)")
    return node[key]


def from_hf(rows: Iterable[Mapping]) -> list[Example]:
    """Examples from Hugging Face rows in the squad schema (answers = {text, answer_start})."""
    return [
        Example(str(r["id"]), r["question"], r["context"], list(r["answers"]["text"]),
                [int(s) for s in r["answers"]["answer_start"]], r.get("title", ""))
        for r in rows
    ]  # fmt: skip


def load_hf(dataset: str, config: str | None = None, split: str = "validation") -> list[Example]:
    """E.g. load_hf("xquad", "xquad.de"); needs the optional `datasets` package."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("load_hf needs the `datasets` package: pip install datasets") from e
    return from_hf(datasets.load_dataset(dataset, config, split=split))


def _answer_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """First and last token overlapping the character span [start, end), or None."""
    first = next((i for i, (_, b) in enumerate(offsets) if b > start), None)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < end), None)
    if first is None or last is None or first > last:
        return None
    return first, last


def featurize(
    examples: Sequence[Example],
    tok: Tokenizer,
    max_length: int = 384,
    stride: int = 128,
    max_query_length: int = 64,
) -> list[dict]:
    """`<s> question </s></s> context window </s>` features, several per long context.

    stride is the overlap between consecutive windows in tokens (the meaning of
    `stride` in tokenizers and in transformers' run_qa.py; BERT's run_squad.py called
    the step between windows "doc_stride"). Training targets come from the first gold
    answer: start/end_positions index input_ids, and are 0 (the <s> token) in windows
    that do not contain the whole answer. Each feature also keeps `example_id` and
    `offsets` (a character span of the context per position, None outside it) for
    `postprocess`.
    """
    tok = prepare_tokenizer(tok)
    questions = encode_texts(tok, [e.question for e in examples])
    contexts = tok.encode_batch([e.context for e in examples], add_special_tokens=False)
    features = []
    for ex, question, context in zip(examples, questions, contexts):
        question = question[:max_query_length]
        window = max_length - len(question) - 4
        if window <= stride:
            raise ValueError(
                f"question {ex.id!r}: max_length {max_length} leaves {window} context tokens per "
                f"window, which must exceed stride {stride}"
            )
        offsets, ids = context.offsets, context.ids
        answer = None
        if ex.answers:
            answer = _answer_tokens(offsets, ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0]))
        head = [BOS_ID, *question, EOS_ID, EOS_ID]
        start = 0
        while True:
            stop = min(start + window, len(ids))
            start_position = end_position = 0
            if answer is not None and start <= answer[0] and answer[1] < stop:
                start_position = len(head) + answer[0] - start
                end_position = len(head) + answer[1] - start
            features.append({
                "input_ids": [*head, *ids[start:stop], EOS_ID],
                "start_positions": start_position,
                "end_positions": end_position,
                "example_id": ex.id,
                "offsets": [None] * len(head) + list(offsets[start:stop]) + [None],
            })  # fmt: skip
            if stop == len(ids):
                break
            start += window - stride
    return features


def collate(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    batch = inputs([f["input_ids"] for f in features])
    for key in ("start_positions", "end_positions"):
        batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    return batch


def _as_numpy(row) -> np.ndarray:
    if isinstance(row, torch.Tensor):
        return row.detach().float().cpu().numpy()
    return np.asarray(row, dtype=np.float64)


def postprocess(
    examples: Sequence[Example],
    features: Sequence[dict],
    start_logits: Sequence,
    end_logits: Sequence,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Answer text per question id from per-feature start / end logits ([T] rows).

    Over all windows of a question, the `n_best` highest start and end positions are
    paired; a span is valid if both ends are context tokens, end >= start and it spans
    at most max_answer_length tokens. The best valid span by start + end logit becomes a
    character span of the original context (surrounding whitespace trimmed); "" if no
    span is valid. Padding past a feature's length is ignored.
    """
    if not len(features) == len(start_logits) == len(end_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)} / {len(end_logits)} logit rows")
    windows = defaultdict(list)
    for f, s, e in zip(features, start_logits, end_logits):
        windows[f["example_id"]].append((f, _as_numpy(s), _as_numpy(e)))
    predictions = {}
    for ex in examples:
        best, best_score = None, -math.inf
        for f, s, e in windows[ex.id]:
            offsets = f["offsets"]
            s, e = s[: len(offsets)], e[: len(offsets)]
            starts = np.argsort(-s, kind="stable")[:n_best, None]  # (n, 1)
            ends = np.argsort(-e, kind="stable")[None, :n_best]  # (1, n)
            in_context = np.array([o is not None for o in offsets])
            valid = in_context[starts] & in_context[ends] & (ends >= starts) & (ends - starts < max_answer_length)
            if not valid.any():
                continue
            scores = np.where(valid, s[starts] + e[ends], -np.inf)
            i, j = np.unravel_index(np.argmax(scores), scores.shape)  # first best on ties
            if scores[i, j] > best_score:
                best_score = scores[i, j]
                best = (offsets[starts[i, 0]][0], offsets[ends[0, j]][1])
        predictions[ex.id] = ex.context[best[0] : best[1]].strip() if best else ""
    return predictions


def evaluate(
    predictions: Mapping[str, str],
    references: Sequence[Example] | Mapping[str, Sequence[str]],
    lang: str | None = None,
) -> dict[str, float]:
    """Exact match and F1 (percent): SQuAD v1.1 normalisation, or MLQA's for `lang`."""
    if not isinstance(references, Mapping):
        references = {ex.id: ex.answers for ex in references}
    return metrics.squad_scores(predictions, references, lang)


# ---------------------------------------------------------------- the record


def default_stride(max_length: int) -> int:
    """Window overlap: a third of the window (128 at 384 tokens, the SQuAD / XTREME setting)."""
    return max_length // 3


def answer_language(normalization: str | None, lang: str | None) -> str | None:
    """The ISO code for MLQA normalisation, or None for SQuAD v1.1's.

    normalization None (or empty) means mlqa when the answers' language is given, else squad. lang is a code as the
    model's languages are named (de_DE) or an ISO code (de).
    """
    if not normalization:
        normalization = "mlqa" if lang else "squad"
    if normalization == "squad":
        return None
    if normalization != "mlqa":
        raise ValueError(f"QA normalization {normalization!r}: expected squad or mlqa")
    if not lang:
        raise ValueError("MLQA normalisation needs the answers' language (--lang)")
    iso = lang.split("_", 1)[0].lower()  # as xmodlm.languages.iso_code
    if iso not in metrics.MLQA_LANGUAGES:
        raise ValueError(f"MLQA normalisation knows {', '.join(metrics.MLQA_LANGUAGES)}, not {lang!r}; "
                         "use --normalization squad")
    return iso


def _featurize(examples: Sequence[Example], tok: Tokenizer, max_length: int, setup: Setup) -> list[dict]:
    stride = default_stride(max_length) if setup.stride is None else setup.stride
    return featurize(examples, tok, max_length, stride=stride)


def _decode(examples: Sequence[Example], features: Sequence[dict], outputs: Sequence[Outputs],
            setup: Setup) -> dict[str, str]:
    return postprocess(examples, features, [s for s, _ in outputs], [e for _, e in outputs])


def _format(predictions: Mapping[str, str], examples: Sequence[Example]) -> str:
    """SQuAD-style {question id: answer} JSON."""
    return json.dumps(predictions, ensure_ascii=False, indent=1) + "\n"


def _read_predictions(path: Path, examples: Sequence[Example]) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: expected JSON {{question id: answer text}} ({e.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object {{question id: answer text}}")
    return data


TASK = Task(
    name="qa",
    head=XmodForQuestionAnswering,
    head_tensors=("qa_outputs.weight", "qa_outputs.bias"),
    max_length=384,
    metrics=("exact_match", "f1"),
    suffix=".json",
    data_suffixes=(".json",),
    read=load,
    featurize=_featurize,
    collate=collate,
    decode=_decode,
    format=_format,
    read_predictions=_read_predictions,
    evaluate=lambda predictions, examples, setup: evaluate(predictions, examples, setup.metric_lang),
    outputs=("start_logits", "end_logits"),
    default_stride=default_stride,
    metric_language=answer_language,
)
