"""Retrieval's own recipe (the task record's ``recipe``): ``xmodlm evaluate --task retrieval`` and ``xmodlm finetune
--task retrieval`` come here from the generic recipes.

Evaluate: every --data language but the pivot is paired with the pivot (``--pivot``, default the last --data item);
pairs are aligned by line or by id (xmodlm.retrieval), then cut by --eval-range / --eval-limit. Each language's
sentences are embedded once through its own module, every layer in the same pass; accuracy@1/5/10 is computed in
both directions at every layer ("acc": the language's sentences search the pivot's; "rev": the pivot's search the
language's). The table shows the chosen layer (``--layer``; default: fine-tuning's layer, else the middle one),
then accuracy@1 by layer. results.json holds both.

Finetune: the encoder learns, with the paper's protocol (embeddings and language modules frozen unless
--full-finetune), to map translations together: a symmetric in-batch InfoNCE loss over pooled states of one layer
(xmodlm.retrieval.info_nce, temperature --temperature, default 0.05 as SimCSE and LaBSE-style dual encoders use),
on pairs of every --train language with the pivot, through the one Trainer. The output directory is a plain
checkpoint of the input's class (e.g. a masked LM) with task.json recording the layer and pooling that evaluate
then uses by default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import torch

from .. import tokenizer as tok_mod
from ..config import XmodConfig
from ..embeddings import check_pooling, embed_texts, resolve_layer
from ..files import atomic_write_text
from ..model import load_pretrained
from ..retrieval import ContrastiveModel, KS, Pairs, metric_names, read_pairs, resolve_search, scores
from ..tasks.retrieval import collate, featurize
from ..tasks.engine import TASK_FILE, resolve_max_length, select, task_named
from ..trainer import Trainer, dist_info
from ..weights import resolve_pretrained
from . import evaluate as ev
from . import finetune as ft

logger = logging.getLogger(__name__)

NAME = "retrieval"


def language_files(items: Sequence[str], flag: str) -> dict[str, Path]:
    """LANG=FILE items (at least two) -> {lang: path}."""
    try:
        files = ev.parse_data(items)
    except ValueError as e:
        raise ValueError(str(e).replace("--data", flag)) from None
    if len(files) < 2:
        raise ValueError(f"{flag}: retrieval needs at least two LANG=FILE items, e.g. {flag} xx=xx-en.xx "
                         f"{flag} en=xx-en.en (a pair of translations), or several languages and --pivot")
    return files


def choose_pivot(pivot: str | None, files: dict[str, Path], flag: str) -> str:
    pivot = pivot or list(files)[-1]
    if pivot not in files:
        raise ValueError(f"--pivot {pivot!r} is not one of the {flag} languages {list(files)}")
    return pivot


def load_pairs(files: dict[str, Path], pivot: str, index_range: str | None, limit: int | None,
               what: str) -> dict[str, Pairs]:
    """{lang: its pairs with the pivot} for every language but the pivot, cut by range and limit."""
    out = {}
    for lang, path in files.items():
        if lang == pivot:
            continue
        pairs = read_pairs(path, files[pivot])
        if not len(pairs):
            raise ValueError(f"{path} and {files[pivot]} have no translation pair in common")
        rows = select(list(zip(pairs.keys, pairs.src, pairs.tgt)), index_range, limit, what)
        out[lang] = Pairs(*map(list, zip(*rows)))
    return out


# ---------------------------------------------------------------- evaluate


def evaluate_model(model, tok, pairs: dict[str, Pairs], pivot: str, modules: dict[str, str], *, layer: int,
                   pooling: str = "mean", scoring: str = "cosine", margin_k: int = 4, search: str = "torch",
                   per_layer: bool = True, max_length: int = 128, batch_size: int = 32, precision: str = "fp32",
                   progress: bool = False) -> dict[str, dict]:
    """{lang: {"module", "pivot", "examples", "chance@1", <metrics at layer>, "layers": {l: metrics}}}.

    The pivot's sentences (those of every pair) are embedded once; each other language is embedded, scored and
    dropped in turn, so memory holds two languages' vectors at a time whatever the number of languages."""
    config = model.config
    layers = list(range(config.num_hidden_layers + 1)) if per_layer else [layer]

    def embed(texts: dict[str, str], lang: str) -> tuple[dict[str, int], torch.Tensor]:
        vectors = embed_texts(model, tok_mod.for_language(tok, modules[lang]), list(texts.values()), modules[lang],
                              layers=layers, pooling=pooling,
                              batch_size=batch_size, max_length=max_length, precision=precision, progress=progress)
        return {key: i for i, key in enumerate(texts)}, vectors

    pivot_texts: dict[str, str] = {}
    for p in pairs.values():
        pivot_texts.update(zip(p.keys, p.tgt))
    pivot_rows, pivot_vectors = embed(pivot_texts, pivot)
    out = {}
    for lang, p in pairs.items():
        rows, vectors = embed(dict(zip(p.keys, p.src)), lang)
        src = vectors[:, [rows[k] for k in p.keys]]
        tgt = pivot_vectors[:, [pivot_rows[k] for k in p.keys]]
        by_layer = {l: scores(src[i], tgt[i], KS, scoring, margin_k, search=search) for i, l in enumerate(layers)}
        out[lang] = {"module": modules[lang], "pivot": pivot, "examples": len(p), "chance@1": 100.0 / len(p),
                     **by_layer[layer], "layers": by_layer}
    return out


def layer_table(rows: dict[str, dict], chosen: int) -> str:
    """Accuracy@1 (mean of the two directions) by layer, one column per language, and their average."""
    langs = list(rows)
    layers = list(next(iter(rows.values()))["layers"])
    width = max(8, *map(len, langs))
    header = f"{'layer':<7}" + "".join(f"{lang:>{width + 2}}" for lang in langs) + f"{'average':>{width + 2}}"
    lines = ["accuracy@1 by layer (mean of acc@1 and rev@1; 0 = embeddings)", header, "-" * len(header)]
    for l in layers:
        values = [(rows[lang]["layers"][l]["acc@1"] + rows[lang]["layers"][l]["rev@1"]) / 2 for lang in langs]
        mark = "*" if l == chosen else ""
        lines.append(f"{str(l) + mark:<7}" + "".join(f"{v:>{width + 2}.2f}" for v in values)
                     + f"{sum(values) / len(values):>{width + 2}.2f}")
    return "\n".join(lines)


def evaluate(s) -> dict:
    """xmodlm evaluate --task retrieval (s: EvaluateSettings); prints the tables, writes results.json."""
    task = task_named(NAME)
    if not s.model:
        raise ValueError("--model is required: a checkpoint directory (pre-trained or fine-tuned)")
    files = language_files(s.data, "--data")
    pivot = choose_pivot(s.pivot, files, "--data")
    directory = resolve_pretrained(s.model)
    trained = ev.read_task_file(directory).get(NAME, {})
    config = XmodConfig.from_pretrained(directory)
    modules = ev.choose_modules(list(files), config, s.fallback)
    layer = resolve_layer(s.layer if s.layer is not None else trained.get("layer"), config)
    pooling = check_pooling(s.pooling or trained.get("pooling", "mean"))
    search = resolve_search(s.search)
    max_length = resolve_max_length(s.max_length, task, config)
    pairs = load_pairs(files, pivot, s.eval_range, s.eval_limit, "eval")

    model = load_pretrained(directory).to(ev.resolve_device(s.device))  # its class as saved; its encoder is used
    tok = tok_mod.load_model_tokenizers(directory, s.tokenizer)  # per language where some have their own
    rows = evaluate_model(model, tok, pairs, pivot, modules, layer=layer, pooling=pooling, scoring=s.scoring,
                          margin_k=s.margin_k, search=search, per_layer=s.per_layer, max_length=max_length,
                          batch_size=s.batch_size, precision=s.precision, progress=True)
    languages = {lang: {**row, "data": str(files[lang]), "pivot_data": str(files[pivot])} for lang, row in rows.items()}
    names = metric_names()
    mean = ev.average(languages, names)
    results = {"task": NAME, "model": str(s.model), "metrics": list(names), "pivot": pivot, "layer": layer,
               "pooling": pooling, "scoring": s.scoring, "margin_k": s.margin_k if s.scoring == "margin" else None,
               "search": search, "precision": s.precision, "max_length": max_length, "languages": languages,
               "average": mean, "settings": dataclasses.asdict(s)}
    if s.per_layer:
        results["average_by_layer"] = {l: ev.average({k: r["layers"][l] for k, r in languages.items()}, names)
                                       for l in next(iter(languages.values()))["layers"]}
    results_path, _ = ev.output_paths(s.out_dir)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"retrieval against {pivot} ({s.scoring}, layer {layer} of {config.num_hidden_layers}, {pooling} pooling; "
          f"acc: language -> {pivot}, rev: {pivot} -> language; chance@1 = 100 / examples)")
    print(ev.format_table(task, languages, mean))
    if s.per_layer:
        print(layer_table(languages, layer))
    print(f"results -> {results_path}")
    return results


# ---------------------------------------------------------------- finetune


def finetune(s) -> dict:
    """xmodlm finetune --task retrieval (s: FinetuneSettings): contrastive training on translation pairs."""
    task = task_named(NAME)
    if not s.model:
        raise ValueError("--model is required")
    if s.valid:
        raise ValueError("--valid: retrieval fine-tuning is scored afterwards, by xmodlm evaluate --task retrieval "
                         "on other pairs (zero-shot)")
    files = language_files(s.train, "--train")
    pivot = choose_pivot(s.pivot, files, "--train")
    directory = resolve_pretrained(s.model)
    config = XmodConfig.from_pretrained(directory)
    missing = [lang for lang in files if lang not in config.languages]
    if missing:
        raise ValueError(f"--train languages {missing} have no module in the model (its languages: "
                         f"{config.languages}); training data must be in the model's languages")
    layer = resolve_layer(s.layer, config)
    pooling = check_pooling(s.pooling or "mean")
    max_length = resolve_max_length(s.max_length, task, config)
    tok = tok_mod.load_model_tokenizers(directory, s.tokenizer)
    pairs = load_pairs(files, pivot, s.train_range, s.train_limit, "train")
    features = featurize(pairs, pivot, config.languages, tok, max_length)

    model = ContrastiveModel(load_pretrained(directory), layer, pooling, s.temperature)
    rank, world, _ = dist_info()
    if s.batch_size % world:
        raise ValueError(f"--batch-size {s.batch_size} must be divisible by the number of processes {world}")
    if s.batch_size < 2:
        raise ValueError("--batch-size must be at least 2: the other pairs of a batch are the negatives")
    batches = ft.TaskBatches(features, collate, s.batch_size, s.seed, 0, rank, world)
    max_steps = s.max_steps or max(1, math.ceil(s.epochs * batches.batches_per_epoch / s.grad_accum))
    lr = s.lr if s.lr is not None else ft.default_lr(config.hidden_size)
    trainer = Trainer(model, ft.train_config(s, max_steps, lr), batches, None,
                      trainable=ft.trainable_filter(s.full_finetune))  # names start "model.": the same rule
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("contrastive fine-tuning on %s, layer %d: %d pairs, %d steps, lr %g, %d of %d parameters train",
                ", ".join(f"{lang}-{pivot}" for lang in pairs), layer, len(features), max_steps, lr, trainable, total)
    record = trainer.fit(export_dir=s.out_dir)
    if len(record) == 1:
        record = ft.last_logged(Path(s.out_dir) / "metrics.jsonl", record)
    summary = {"task": NAME, NAME: {"layer": layer, "pooling": pooling, "temperature": s.temperature,
                                    "pivot": pivot, "pairs": {lang: len(p) for lang, p in pairs.items()}, "lr": lr},
               "labels": None, "source_lang": None, "max_length": max_length, "stride": None,
               "train": {lang: str(path) for lang, path in files.items()}, "train_examples": len(features),
               "train_features": len(features), "max_steps": max_steps, "full_finetune": s.full_finetune,
               "trainable_parameters": trainable, "parameters": total, "metrics": record,
               "settings": dataclasses.asdict(s)}
    if rank == 0:
        out = Path(s.out_dir)
        tok_mod.save_tokenizers(tok, out)  # the languages' own ones too: the model keeps their rows
        atomic_write_text(out / TASK_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        print(f"fine-tuned retrieval on {', '.join(f'{lang}-{pivot}' for lang in pairs)} ({len(features)} pairs, "
              f"{record['step']} steps, loss {record.get('loss', float('nan')):.4g}, layer {layer}) -> {out}")
    return {"out_dir": s.out_dir, **summary}
