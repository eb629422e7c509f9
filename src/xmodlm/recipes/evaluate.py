"""Evaluation recipe: a fine-tuned model on target languages, zero-shot, each through its own module; re-scoring.

What runs: the fine-tuned task head, with the target language's module in every layer (the paper's zero-shot
transfer). A language without a module is an error unless ``--fallback`` names a module (a code, or ``closest``:
languages.closest_module). Metrics as the benchmarks define them (xmodlm.metrics): NLI and MC accuracy, NER entity
F1, POS accuracy, QA exact match / F1 with SQuAD v1.1's normalisation or MLQA's language-aware one. Output:
``results.json`` and one predictions file per language, which ``xmodlm score`` re-scores against the data file.

Also the task glue that the finetune recipe shares: which head serves a task, featurisation with the task's
defaults, batched prediction with a fixed language, decoding and scoring.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import tasks
from ..config import XmodConfig
from ..files import atomic_write_text
from ..weights import resolve_pretrained
from ..languages import closest_module, iso_code
from ..metrics import MLQA_LANGUAGES
from ..model import (XmodForMultipleChoice, XmodForQuestionAnswering, XmodForSequenceClassification,
                     XmodForTokenClassification, XmodPreTrainedModel)
from ..settings import setting
from ..tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

HEADS: dict[str, type[XmodPreTrainedModel]] = {
    "nli": XmodForSequenceClassification,
    "ner": XmodForTokenClassification,
    "pos": XmodForTokenClassification,
    "qa": XmodForQuestionAnswering,
    "mc": XmodForMultipleChoice,
}
# A tensor every trained head of the task has; a pre-trained (MLM) checkpoint lacks it.
HEAD_TENSORS = {"nli": "classifier.out_proj.weight", "ner": "classifier.weight", "pos": "classifier.weight",
                "qa": "qa_outputs.weight", "mc": "classifier.weight"}
DEFAULT_MAX_LENGTH = {"nli": 128, "ner": 128, "pos": 128, "qa": 384, "mc": 128}
METRICS = {"nli": ("accuracy",), "ner": ("precision", "recall", "f1"), "pos": ("accuracy",),
           "qa": ("exact_match", "f1"), "mc": ("accuracy",)}
PREDICTION_SUFFIX = {"nli": ".txt", "mc": ".txt", "ner": ".conll", "pos": ".tsv", "qa": ".json"}
TASK_FILE = "task.json"  # written by the finetune recipe next to the model


# ---------------------------------------------------------------------------------------
# Task glue, shared with the finetune recipe
# ---------------------------------------------------------------------------------------
def check_task(task: str | None) -> str:
    if not task:
        raise ValueError(f"--task is required: one of {', '.join(tasks.NAMES)}")
    tasks.get(task)  # names the tasks when unknown
    return task


def token_limit(config: XmodConfig) -> int:
    """Longest input the position embeddings allow (RoBERTa positions start after padding_idx)."""
    return config.max_position_embeddings - config.pad_token_id - 1


def resolve_max_length(max_length: int | None, task: str, config: XmodConfig) -> int:
    """The task's default (QA 384, else 128), capped by the model's positions; an explicit value must fit them."""
    limit = token_limit(config)
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH[task], limit)
    if not 3 < max_length <= limit:
        raise ValueError(f"--max-length {max_length}: this model takes 4 to {limit} tokens "
                         f"(max_position_embeddings {config.max_position_embeddings})")
    return max_length


def parse_range(text: str, what: str) -> slice:
    """'a:b', 'a:' or ':b' (Python slice bounds, by example index) -> slice."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return slice(int(start) if start.strip() else None, int(stop) if stop.strip() else None)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected START:END example indices, e.g. 0:1000 or 1000:") from None


def select(examples: list, index_range: str | None, limit: int | None, what: str) -> list:
    """Examples [a:b] of a file (pair index for NLI, question for QA, sentence for NER/POS), then the first `limit`.

    Splitting by index keeps parallel files (XNLI, XQuAD) aligned: the same range picks the same items in every
    language, so training on a:b of English and evaluating the rest never evaluates a translation of a training
    item."""
    n = len(examples)
    if index_range:
        examples = examples[parse_range(index_range, f"--{what}-range")]
        if not examples:
            raise ValueError(f"--{what}-range {index_range} selects none of the {n} examples")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--{what}-limit {limit}: must be at least 1")
        examples = examples[:limit]
    return examples


def load_examples(task: str, path: str | Path) -> list:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a {task} data file)")
    examples = tasks.get(task).load(path)
    if not examples:
        raise ValueError(f"{path}: no {task} examples in this file")
    return examples


def default_stride(max_length: int) -> int:
    """QA window overlap: a third of the window (128 at 384 tokens, the SQuAD / XTREME setting)."""
    return max_length // 3


def featurize(task: str, examples: Sequence, tok, max_length: int, labels: Sequence[str] | None = None,
              stride: int | None = None) -> list[dict]:
    module = tasks.get(task)
    if task in ("ner", "pos"):
        return module.featurize(examples, tok, max_length, labels)
    if task == "qa":
        return module.featurize(examples, tok, max_length, stride=default_stride(max_length) if stride is None
                                else stride)
    return module.featurize(examples, tok, max_length)


def _length(feature: dict) -> int:
    ids = feature["input_ids"]
    return max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


@torch.no_grad()
def predict(model: XmodPreTrainedModel, task: str, features: Sequence[dict], lang_id: int,
            batch_size: int = 32) -> list:
    """Raw outputs per feature, every example routed to language ``lang_id``: a label id (nli, mc), per-position
    label ids (ner, pos), or a (start_logits, end_logits) pair of 1-D tensors (qa). Features are batched by length
    (less padding); outputs come back in the features' order."""
    collate = tasks.get(task).collate
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: _length(features[i]))
    out: list[Any] = [None] * len(features)
    for k in range(0, len(order), batch_size):
        rows = order[k:k + batch_size]
        batch = collate([features[i] for i in rows])
        result = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       lang_ids=torch.full((len(rows),), lang_id, dtype=torch.long, device=device))
        if task == "qa":
            values = list(zip(result.start_logits.float().cpu(), result.end_logits.float().cpu()))
        else:
            values = result.logits.argmax(-1).cpu().tolist()
        for i, value in zip(rows, values):
            out[i] = value
    return out


def nli_label_ids(id2label: dict[int, str] | None) -> list[int]:
    """For each head output, its index in tasks.nli.LABELS (the order the references use)."""
    from ..tasks import nli

    names = [id2label[i] for i in range(len(id2label))] if id2label else []
    if sorted(names) == sorted(nli.LABELS):
        return [nli.LABELS.index(name) for name in names]
    if len(names) == 3 and all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        logger.warning("the NLI head's labels are unnamed (LABEL_0..2): assuming the order %s", list(nli.LABELS))
        return [0, 1, 2]
    raise ValueError(f"the model's labels {names} are not the NLI labels {list(nli.LABELS)}")


def decode(task: str, examples: Sequence, features: Sequence[dict], raw: Sequence,
           labels: Sequence[str] | None = None, nli_ids: Sequence[int] | None = None) -> Any:
    """Predictions in the task's own terms: NLI label indices (tasks.nli.LABELS), MC choice indices, per-word tags
    (NER, POS), {question id: answer text} (QA)."""
    module = tasks.get(task)
    if task == "nli":
        return [nli_ids[i] if nli_ids is not None else i for i in raw]
    if task == "mc":
        return list(raw)
    if task in ("ner", "pos"):
        return module.decode(features, raw, examples, labels)
    return module.postprocess(examples, features, [s for s, _ in raw], [e for _, e in raw])


def compute_metrics(task: str, predictions: Any, examples: Sequence, qa_lang: str | None = None) -> dict[str, float]:
    """The task's metrics (percentages); ``qa_lang`` selects MLQA's normalisation for that ISO code."""
    module = tasks.get(task)
    if task in ("nli", "mc"):
        return module.evaluate(predictions, [e.label for e in examples])
    if task in ("ner", "pos"):
        return module.evaluate(predictions, [e.tags for e in examples])
    return module.evaluate(predictions, examples, qa_lang)


def evaluator(task: str, examples: Sequence, features: Sequence[dict], lang_id: int, batch_size: int,
              labels: Sequence[str] | None = None):
    """model -> metrics on fixed examples in one language (the finetune recipe's validation)."""

    def evaluate(model: XmodPreTrainedModel) -> dict[str, float]:
        nli_ids = nli_label_ids(model.config.id2label) if task == "nli" else None
        raw = predict(model, task, features, lang_id, batch_size)
        return compute_metrics(task, decode(task, examples, features, raw, labels, nli_ids), examples)

    return evaluate


# ---------------------------------------------------------------------------------------
# Prediction files
# ---------------------------------------------------------------------------------------
def format_predictions(task: str, predictions: Any, examples: Sequence) -> str:
    """QA: SQuAD-style {question id: answer} JSON. NLI: one label name a line. MC: one choice index a line.
    NER / POS: `word<TAB>predicted tag` lines, a blank line after each sentence (loadable by the task's loader)."""
    if task == "qa":
        return json.dumps(predictions, ensure_ascii=False, indent=1) + "\n"
    if task == "nli":
        from ..tasks import nli

        return "".join(f"{nli.LABELS[p]}\n" for p in predictions)
    if task == "mc":
        return "".join(f"{p}\n" for p in predictions)
    return "".join("".join(f"{w}\t{t}\n" for w, t in zip(ex.words, tags)) + "\n"
                   for ex, tags in zip(examples, predictions))


def read_predictions(task: str, path: str | Path, examples: Sequence) -> Any:
    """The inverse of format_predictions, checked against the reference examples."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such predictions file")
    if task == "qa":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: expected JSON {{question id: answer text}} ({e.msg})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object {{question id: answer text}}")
        return data
    if task in ("nli", "mc"):
        from ..tasks import nli

        values = []
        for number, line in tasks.read_lines(path):
            text = line.strip()
            if not text:
                continue
            if task == "nli" and text in nli.LABELS:
                values.append(nli.LABELS.index(text))
            elif text.isdigit():
                values.append(int(text))
            else:
                expected = f"a label ({', '.join(nli.LABELS)}) or its id" if task == "nli" else "a choice index"
                raise tasks.format_error(path, number, expected, line)
        if len(values) != len(examples):
            raise ValueError(f"{path}: {len(values)} predictions for {len(examples)} reference examples")
        return values
    from ..tasks import ner, pos

    predicted = ner.load(path, strip_language_prefix=False) if task == "ner" else pos.load_tsv(path)
    if len(predicted) != len(examples):
        raise ValueError(f"{path}: {len(predicted)} predicted sentences for {len(examples)} reference sentences")
    for i, (p, ex) in enumerate(zip(predicted, examples)):
        if p.words != ex.words:
            raise ValueError(f"{path}: sentence {i + 1} has the words {p.words[:6]}..., the reference "
                             f"{ex.words[:6]}...: the files are not aligned")
    return [p.tags for p in predicted]


def qa_language(normalization: str | None, lang: str | None) -> str | None:
    """The ISO code for MLQA normalisation, or None for SQuAD v1.1's."""
    if normalization in (None, "squad"):
        return None
    if normalization != "mlqa":
        raise ValueError(f"QA normalization {normalization!r}: expected squad or mlqa")
    if not lang:
        raise ValueError("MLQA normalisation needs the answers' language (--lang)")
    iso = iso_code(lang)
    if iso not in MLQA_LANGUAGES:
        raise ValueError(f"MLQA normalisation knows {', '.join(MLQA_LANGUAGES)}, not {lang!r}; "
                         "use --normalization squad")
    return iso


# ---------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------
@dataclass
class EvaluateSettings:
    model: str = setting("", "fine-tuned model directory (from xmodlm finetune) or hub id")
    task: str | None = setting(None, "nli | ner | pos | qa | mc (default: the task in the model's task.json)")
    data: list[str] = setting([], "LANG=FILE, e.g. de_DE=dev-de.tsv: LANG picks the module (zero-shot) and "
                                  "names the row")
    out_dir: str = setting("runs/evaluate", "results.json and predictions/<LANG>.* go here (a path ending in .json "
                                            "names the results file; predictions go next to it)", flags=("--out",))
    tokenizer: str | None = setting(None, "tokenizer directory (default: the model's directory)")
    batch_size: int = setting(32, "features per forward pass")
    max_length: int | None = setting(None, "tokens per input (default: fine-tuning's, else QA 384 and 128)")
    stride: int | None = setting(None, "QA: tokens shared by consecutive windows (default: fine-tuning's, else "
                                       "max_length / 3)")
    fallback: str | None = setting(None, "module for a language the model lacks: a language code, or 'closest' "
                                         "(a related language, else the default language, else en_XX / id 0)")
    eval_range: str | None = setting(None, "evaluate examples START:END of every file (by index, e.g. 1000:)")
    eval_limit: int | None = setting(None, "evaluate the first N examples (after --eval-range)")
    qa_normalization: str = setting("squad", "QA answer normalisation: squad (XQuAD, TyDiQA) or mlqa "
                                             "(language-aware, MLQA)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}; it must be >= 1")
        if self.qa_normalization not in ("squad", "mlqa"):
            raise ValueError(f"qa_normalization={self.qa_normalization!r}; expected squad or mlqa")


def parse_data(items: Sequence[str]) -> dict[str, Path]:
    """["de_DE=a.tsv", ...] -> {"de_DE": Path("a.tsv")}, each file checked to exist."""
    if not items:
        raise ValueError("--data is required: LANG=FILE items, e.g. --data de_DE=dev-de.tsv --data th_TH=dev-th.tsv")
    out: dict[str, Path] = {}
    for item in items:
        lang, sep, file = item.partition("=")
        lang = lang.strip()
        if not sep or not lang or not file:
            raise ValueError(f"--data item {item!r}: expected LANG=FILE, e.g. de_DE=dev-de.tsv")
        if "/" in lang or "\\" in lang or any(c.isspace() for c in lang):
            raise ValueError(f"--data item {item!r}: {lang!r} is not a language code")
        if lang in out:
            raise ValueError(f"--data names {lang!r} twice")
        if not Path(file).is_file():
            raise FileNotFoundError(f"--data {lang}={file}: no such file")
        out[lang] = Path(file)
    return out


def choose_modules(targets: Sequence[str], config: XmodConfig, fallback: str | None) -> dict[str, str]:
    """Target language -> the module that serves it: its own, else the fallback (checked before any work)."""
    languages = config.languages
    if fallback is not None and fallback != "closest" and fallback not in languages:
        raise ValueError(f"--fallback {fallback!r} is neither 'closest' nor one of the model's languages {languages}")
    modules = {}
    for lang in targets:
        if lang in languages:
            modules[lang] = lang
        elif fallback is None:
            raise ValueError(f"the model has no module for {lang!r}; its languages: {languages}. Pass --fallback "
                             "closest (or a language code) to evaluate it through another language's module")
        elif fallback == "closest":
            modules[lang] = closest_module(lang, languages, config.default_language)
        else:
            modules[lang] = fallback
    return modules


def read_task_file(directory: Path) -> dict:
    path = directory / TASK_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from None


def check_head(directory: Path, task: str) -> None:
    """A model evaluated on a task must have that task's trained head, not a freshly initialised one."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(single, "pt") as f:
            keys = set(f.keys())
    elif index.is_file():
        keys = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    else:
        return  # a .bin checkpoint: from_pretrained reports what it has
    if HEAD_TENSORS[task] not in keys:
        raise ValueError(f"{directory} has no trained {task} head ({HEAD_TENSORS[task]}); fine-tune it first "
                         "(xmodlm finetune) or pass the fine-tuned directory")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_languages(model: XmodPreTrainedModel, tok, task: str, datasets: dict[str, list],
                       modules: dict[str, str], *, max_length: int, stride: int | None = None,
                       batch_size: int = 32, qa_normalization: str = "squad") -> dict[str, dict]:
    """{lang: {"module", "examples", <metrics>, "predictions": task-native predictions}} for in-memory data."""
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)] if task in ("ner", "pos") else None
    nli_ids = nli_label_ids(model.config.id2label) if task == "nli" else None
    out = {}
    for lang, examples in datasets.items():
        known = labels
        if labels is not None:
            # Reference tags the head never learned (e.g. MISC) only need an id to be featurized; it is never
            # predicted, so such entities count as missed.
            unseen = sorted({t for e in examples for t in e.tags} - set(labels))
            if unseen:
                logger.warning("%s: tags %s are not among the model's labels; they are never predicted", lang, unseen)
                known = [*labels, *unseen]
        features = featurize(task, examples, tok, max_length, known, stride)
        raw = predict(model, task, features, model.config.languages.index(modules[lang]), batch_size)
        predictions = decode(task, examples, features, raw, labels, nli_ids)
        qa_lang = qa_language(qa_normalization, lang) if task == "qa" else None
        out[lang] = {"module": modules[lang], "examples": len(examples),
                     **compute_metrics(task, predictions, examples, qa_lang), "predictions": predictions}
    return out


def average(rows: dict[str, dict], names: Sequence[str]) -> dict[str, float]:
    """Unweighted mean over languages (as the X-Mod and XTREME tables)."""
    return {m: sum(r[m] for r in rows.values()) / len(rows) for m in names}


def format_table(task: str, rows: dict[str, dict], mean: dict[str, float]) -> str:
    names = METRICS[task]
    modules = {lang: r["module"] + ("" if r["module"] == lang else " (fallback)") for lang, r in rows.items()}
    w_lang = max([len("language"), len("average"), *map(len, rows)])
    w_mod = max([len("module"), *map(len, modules.values())])
    w_metric = [max(len(m), 7) for m in names]
    header = f"{'language':<{w_lang}}  {'module':<{w_mod}}  {'examples':>8}  " + "  ".join(
        f"{m:>{w}}" for m, w in zip(names, w_metric))
    lines = [header, "-" * len(header)]
    for lang, r in rows.items():
        lines.append(f"{lang:<{w_lang}}  {modules[lang]:<{w_mod}}  {r['examples']:>8}  "
                     + "  ".join(f"{r[m]:>{w}.2f}" for m, w in zip(names, w_metric)))
    lines.append(f"{'average':<{w_lang}}  {'':<{w_mod}}  {'':>8}  "
                 + "  ".join(f"{mean[m]:>{w}.2f}" for m, w in zip(names, w_metric)))
    return "\n".join(lines)


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(results.json path, predictions directory) for --out."""
    out = Path(out)
    if out.suffix == ".json":
        return out, out.parent / "predictions"
    return out / "results.json", out / "predictions"


def run(s: EvaluateSettings) -> dict:
    """Evaluate every --data language; print the table; write results.json and predictions; return the results."""
    if not s.model:
        raise ValueError("--model is required: a fine-tuned model directory")
    files = parse_data(s.data)
    directory = resolve_pretrained(s.model)
    info = read_task_file(directory)
    if s.task and info.get("task") and s.task != info["task"]:
        raise ValueError(f"--task {s.task} but {directory / TASK_FILE} says the model was fine-tuned for "
                         f"{info['task']!r}")
    task = check_task(s.task or info.get("task"))
    config = XmodConfig.from_pretrained(directory)
    modules = choose_modules(list(files), config, s.fallback)
    if task == "qa" and s.qa_normalization == "mlqa":
        for lang in files:
            qa_language("mlqa", lang)  # fail before any work
    check_head(directory, task)
    max_length = resolve_max_length(s.max_length or info.get("max_length"), task, config)
    stride = s.stride if s.stride is not None else info.get("stride")
    datasets = {lang: select(load_examples(task, path), s.eval_range, s.eval_limit, "eval")
                for lang, path in files.items()}

    model = HEADS[task].from_pretrained(directory).to(resolve_device(s.device))
    tok = load_tokenizer(s.tokenizer or directory)
    rows = evaluate_languages(model, tok, task, datasets, modules, max_length=max_length, stride=stride,
                              batch_size=s.batch_size, qa_normalization=s.qa_normalization)

    results_path, predictions_dir = output_paths(s.out_dir)
    predictions_dir.mkdir(parents=True, exist_ok=True)
    languages = {}
    for lang, row in rows.items():
        path = predictions_dir / f"{lang}{PREDICTION_SUFFIX[task]}"
        atomic_write_text(path, format_predictions(task, row.pop("predictions"), datasets[lang]))
        languages[lang] = {**row, "data": str(files[lang]), "predictions": str(path)}
    mean = average(languages, METRICS[task])
    results = {"task": task, "model": str(s.model), "metrics": list(METRICS[task]), "languages": languages,
               "average": mean, "max_length": max_length, "settings": dataclasses.asdict(s)}
    if task == "qa":
        results["stride"] = stride if stride is not None else default_stride(max_length)
        results["qa_normalization"] = s.qa_normalization
    results_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(format_table(task, languages, mean))
    print(f"results -> {results_path}")
    return results


# ---------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------
@dataclass
class ScoreSettings:
    task: str = setting("qa", "nli | ner | pos | qa | mc")
    data: str = setting("", "reference data file (the file evaluate read)")
    predictions: str = setting("", "predictions file written by evaluate (QA: SQuAD-style {id: answer} JSON)")
    lang: str | None = setting(None, "QA: the answers' language (de or de_DE) for MLQA normalisation")
    normalization: str | None = setting(None, "QA: squad | mlqa (default: mlqa when --lang is given, else squad)")
    eval_range: str | None = setting(None, "score examples START:END of --data (as evaluate's --eval-range)")
    eval_limit: int | None = setting(None, "score the first N examples (as evaluate's --eval-limit)")


def score(s: ScoreSettings) -> dict[str, float]:
    """Print the metrics of a predictions file against its data file as JSON; return them.

    QA: the SQuAD v1.1 evaluation (every reference question counts; a missing prediction scores 0), or MLQA's."""
    task = check_task(s.task)
    if not s.data or not s.predictions:
        raise ValueError("--data (the reference file) and --predictions are required")
    examples = select(load_examples(task, s.data), s.eval_range, s.eval_limit, "eval")
    predictions = read_predictions(task, s.predictions, examples)
    qa_lang = None
    if task == "qa":
        qa_lang = qa_language(s.normalization or ("mlqa" if s.lang else "squad"), s.lang)
    result = compute_metrics(task, predictions, examples, qa_lang)
    print(json.dumps(result))
    return result

