"""Evaluation recipe: a fine-tuned model on target languages, zero-shot, each through its own module; re-scoring.

What runs: the fine-tuned task head, with the target language's module in every layer (the paper's zero-shot
transfer). A language without a module is an error unless ``--fallback`` names a module (a code, or ``closest``:
languages.closest_module). Metrics as the benchmarks define them (xmodlm.metrics): NLI and MC accuracy, NER entity
F1, POS accuracy, QA exact match / F1 with SQuAD v1.1's normalisation or MLQA's language-aware one. Output:
``results.json`` and one predictions file per language, which ``xmodlm score`` re-scores against the data file.

Every task-specific step is a field of the task's record (xmodlm.tasks.Task); what the finetune recipe shares with
this one is in xmodlm.tasks.engine. A task without a head (retrieval) names its own recipe module in its record
(``Task.recipe``), whose evaluate this recipe calls instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import XmodConfig
from ..files import atomic_write_text
from ..languages import closest_module
from ..model import XmodPreTrainedModel
from ..weights import resolve_pretrained
from ..settings import setting
from ..tasks import Setup, Task
from ..tasks.engine import (TASK_FILE, head_labels, load_examples, predict, resolve_max_length, resolve_stride,
                            select, task_named)
from ..tokenizer import check_tokenizer_fits, for_language, load_model_tokenizers, shared_tokenizer

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------
@dataclass
class EvaluateSettings:
    model: str = setting("", "fine-tuned model directory (from xmodlm finetune) or hub id",
                         required=True)
    task: str | None = setting(None, "nli | ner | pos | qa | mc | retrieval (default: the task in the model's "
                                     "task.json)")
    data: list[str] = setting([], "LANG=FILE, e.g. de_DE=dev-de.tsv: LANG picks the module (zero-shot) and "
                                  "names the row", required=True)
    out_dir: str = setting("runs/evaluate", "results.json and predictions/<LANG>.* go here (a path ending in .json "
                                            "names the results file; predictions go next to it)", flags=("--out",))
    tokenizer: str | None = setting(None, "tokenizer directory (default: the model's directory)")
    batch_size: int = setting(32, "features per forward pass", low=1)
    max_length: int | None = setting(None, "tokens per input (default: fine-tuning's, else QA 384 and 128)",
                                     low=8)
    stride: int | None = setting(None, "QA: tokens shared by consecutive windows (default: fine-tuning's, else "
                                       "max_length / 3)", low=0)
    fallback: str | None = setting(None, "module for a language the model lacks: a language code, or 'closest' "
                                         "(a related language, else the default language, else en_XX / id 0)")
    eval_range: str | None = setting(None, "evaluate examples START:END of every file (by index, e.g. 1000:)")
    eval_limit: int | None = setting(None, "evaluate the first N examples (after --eval-range)", low=1)
    qa_normalization: str = setting("squad", "QA answer normalisation: squad (XQuAD, TyDiQA) or mlqa "
                                             "(language-aware, MLQA)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    pivot: str | None = setting(None, "retrieval: the --data language every other one is paired with (default: "
                                      "the last --data item)")
    layer: int | None = setting(None, "retrieval: layer whose states embed sentences, 0 = embeddings, -1 = last "
                                      "(default: fine-tuning's, else the middle layer)", low=-257, high=256)
    pooling: str | None = setting(None, "retrieval: mean | cls (default: fine-tuning's, else mean)")
    scoring: str = setting("cosine", "retrieval: cosine | margin (ratio margin, Artetxe & Schwenk 2019)")
    margin_k: int = setting(4, "retrieval: neighbours each side in the margin", low=1)
    search: str = setting("auto", "retrieval: torch | faiss | auto (faiss when installed); both exact")
    per_layer: bool = setting(True, "retrieval: also score every layer (one forward pass) and print accuracy@1 by "
                                    "layer")
    precision: str = setting("fp32", "retrieval: fp32 | bf16 (the encoder in bf16 autocast)")

    def __post_init__(self):
        if self.margin_k < 1:
            raise ValueError(f"margin_k={self.margin_k}; it must be >= 1")
        if self.scoring not in ("cosine", "margin"):
            raise ValueError(f"scoring={self.scoring!r}; expected cosine or margin")
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


def check_head(directory: Path, task: Task) -> None:
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
    missing = [name for name in task.head_tensors if name not in keys]
    if missing:
        raise ValueError(f"{directory} has no trained {task.name} head ({', '.join(missing)}); fine-tune it first "
                         "(xmodlm finetune) or pass the fine-tuned directory")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_languages(model: XmodPreTrainedModel, tok, task: Task, datasets: dict[str, list],
                       modules: dict[str, str], *, max_length: int, stride: int | None = None,
                       batch_size: int = 32, normalization: str | None = "squad") -> dict[str, dict]:
    """{lang: {"module", "examples", <metrics>, "predictions": task-native predictions}} for in-memory data.

    normalization: for tasks whose metric depends on the language (QA: squad or mlqa), else unused."""
    labels = head_labels(task, model.config)
    out = {}
    for lang, examples in datasets.items():
        metric_lang = task.metric_language(normalization, lang) if task.metric_language else None
        setup = Setup(labels=labels, stride=stride, lang=lang, metric_lang=metric_lang, unseen_labels=True)
        features = task.featurize(examples, for_language(tok, modules[lang]), max_length, setup)
        outputs = predict(model, task, features, model.config.languages.index(modules[lang]), batch_size)
        predictions = task.decode(examples, features, outputs, setup)
        out[lang] = {"module": modules[lang], "examples": len(examples),
                     **task.evaluate(predictions, examples, setup), "predictions": predictions}
    return out


def average(rows: dict[str, dict], names: Sequence[str]) -> dict[str, float]:
    """Unweighted mean over languages (as the X-Mod and XTREME tables)."""
    return {m: sum(r[m] for r in rows.values()) / len(rows) for m in names}


def format_table(task: Task, rows: dict[str, dict], mean: dict[str, float]) -> str:
    names = task.metrics
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
    task = task_named(s.task or info.get("task"))
    if task.recipe is not None:  # a task scored without a head (retrieval) runs its own evaluation
        return importlib.import_module(task.recipe).evaluate(s)
    config = XmodConfig.from_pretrained(directory)
    modules = choose_modules(list(files), config, s.fallback)
    if task.metric_language is not None:
        for lang in files:
            task.metric_language(s.qa_normalization, lang)  # fail before any work
    check_head(directory, task)
    max_length = resolve_max_length(s.max_length or info.get("max_length"), task, config)
    stride = s.stride if s.stride is not None else info.get("stride")
    datasets = {lang: select(load_examples(task, path), s.eval_range, s.eval_limit, "eval")
                for lang, path in files.items()}

    model = task.head.from_pretrained(directory).to(resolve_device(s.device))
    tok = load_model_tokenizers(directory, s.tokenizer)  # a language with its own vocabulary: its own tokenizer
    check_tokenizer_fits(shared_tokenizer(tok), model.config, str(s.tokenizer or directory), s.model)
    rows = evaluate_languages(model, tok, task, datasets, modules, max_length=max_length, stride=stride,
                              batch_size=s.batch_size, normalization=s.qa_normalization)

    results_path, predictions_dir = output_paths(s.out_dir)
    predictions_dir.mkdir(parents=True, exist_ok=True)
    languages = {}
    for lang, row in rows.items():
        path = predictions_dir / f"{lang}{task.suffix}"
        atomic_write_text(path, task.format(row.pop("predictions"), datasets[lang]))
        languages[lang] = {**row, "data": str(files[lang]), "predictions": str(path)}
    mean = average(languages, task.metrics)
    results = {"task": task.name, "model": str(s.model), "metrics": list(task.metrics), "languages": languages,
               "average": mean, "max_length": max_length, "settings": dataclasses.asdict(s)}
    if task.default_stride is not None:
        results["stride"] = resolve_stride(stride, task, max_length)
    if task.metric_language is not None:
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
    data: str = setting("", "reference data file (the file evaluate read)", required=True)
    predictions: str = setting("", "predictions file written by evaluate (QA: SQuAD-style {id: answer} JSON)",
                               required=True)
    lang: str | None = setting(None, "QA: the answers' language (de or de_DE) for MLQA normalisation")
    normalization: str | None = setting(None, "QA: squad | mlqa (default: mlqa when --lang is given, else squad)")
    eval_range: str | None = setting(None, "score examples START:END of --data (as evaluate's --eval-range)")
    eval_limit: int | None = setting(None, "score the first N examples (as evaluate's --eval-limit)", low=1)
    json: bool = setting(False, "print the metrics as one JSON object (full precision) instead of a line of text")


def read_predictions(task: Task, path: str | Path, examples: Sequence) -> Any:
    """A predictions file evaluate wrote, read back by the task and checked against the reference examples."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such predictions file")
    return task.read_predictions(path, examples)


def score(s: ScoreSettings) -> dict[str, float]:
    """Print the metrics of a predictions file against its data file (a line of text, or JSON); return them.

    QA: the SQuAD v1.1 evaluation (every reference question counts; a missing prediction scores 0), or MLQA's."""
    task = task_named(s.task)
    if not s.data or not s.predictions:
        raise ValueError("--data (the reference file) and --predictions are required")
    examples = select(load_examples(task, s.data), s.eval_range, s.eval_limit, "eval")
    try:
        predictions = read_predictions(task, s.predictions, examples)
    except ValueError as e:
        raise ValueError(f"{e}{range_hint(s)}") from None
    metric_lang = task.metric_language(s.normalization, s.lang) if task.metric_language else None
    if isinstance(predictions, dict):  # {id: prediction} (QA): say what does not match instead of scoring silently
        check_prediction_ids(predictions, examples, s.predictions, s.data)
    result = task.evaluate(predictions, examples, Setup(lang=s.lang, metric_lang=metric_lang))
    if s.json:
        print(json.dumps(result))
    else:
        print("  ".join(f"{name} {value:.2f}" for name, value in result.items())
              + f"  ({len(examples)} examples, {Path(s.predictions).name})")
    return result


def range_hint(s: ScoreSettings) -> str:
    """When predictions and references do not line up: the --eval-range / --eval-limit evaluate used, from the
    results.json next to the predictions directory, or a pointer to those flags."""
    results = Path(s.predictions).parent.parent / "results.json"
    used = {}
    if results.is_file():
        try:
            used = json.loads(results.read_text(encoding="utf-8")).get("settings", {})
        except json.JSONDecodeError:
            pass
    flags = " ".join(f"--{k.replace('_', '-')} {used[k]}" for k in ("eval_range", "eval_limit")
                     if used.get(k) is not None)
    mine = " ".join(f"--{k.replace('_', '-')} {getattr(s, k)}" for k in ("eval_range", "eval_limit")
                    if getattr(s, k) is not None) or "none"
    if flags:
        return f". {results} says evaluate ran with {flags} (this run: {mine}); pass the same here"
    return (f". If evaluate ran on part of the file (--eval-range START:END, --eval-limit N), pass the same here "
            f"(this run: {mine})")


def check_prediction_ids(predictions: dict, examples: Sequence, predictions_path: str, data_path: str) -> None:
    """Warn (stderr) about predictions for ids the reference lacks (ignored) and count the reference ids without a
    prediction (each scores 0)."""
    ids = [getattr(ex, "id", None) for ex in examples]
    known = set(ids)
    unknown = [k for k in predictions if k not in known]
    missing = [i for i in ids if i not in predictions]
    if unknown:
        print(f"warning: {predictions_path}: {len(unknown)} of {len(predictions)} predictions are for ids not in "
              f"{data_path} (e.g. {unknown[:3]}); they are ignored", file=sys.stderr)
    if missing:
        print(f"warning: {predictions_path}: {len(missing)} of {len(ids)} questions of {data_path} have no prediction "
              f"(e.g. {missing[:3]}); each scores 0", file=sys.stderr)

