"""Fine-tuning recipe: a task head on a pre-trained X-Mod model, trained on one source language through its module.

What trains (the paper's protocol): everything except the embeddings, every language module and their
adapter_layer_norm, which stay bit-identical, so that after training on the source language any other language's
module can be switched in (zero-shot transfer; see the evaluate recipe). ``--full-finetune`` trains everything.
Data: one task file in its benchmark format, every example routed to the source language's module, reshuffled each
epoch from the seed. Loss: the task head's. Same training loop as pre-training; rerunning the command resumes.

Defaults are fairseq's NLI recipe: lr 1e-5 (for models of width 768 and more; 1e-3 for narrower ones), batch 32, 5 epochs, Adam betas (0.9, 0.98), eps 1e-6, weight decay
0.01, linear warm-up over 6% of the updates. Output (``--out``): the model (config.json with id2label,
model.safetensors), the tokenizer, and task.json (task, labels, source language, lengths, settings, final metrics)
that the evaluate recipe reads. A task without a head (retrieval) names its own recipe module in its record
(``Task.recipe``), whose finetune this recipe calls instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import tokenizer as tok_mod
from ..config import XmodConfig, validate_code
from ..files import atomic_write_text, run_lock
from ..weights import resolve_pretrained
from ..model import is_embedding_or_module_param
from ..settings import setting
from ..tasks import Setup
from ..tasks.engine import (TASK_FILE, evaluator, head_overrides, load_examples, predict, resolve_max_length,
                            resolve_stride, select, task_named)
from ..trainer import Trainer, TrainConfig, dist_info

logger = logging.getLogger(__name__)


@dataclass
class FinetuneSettings(TrainConfig):
    model: str = setting("", "pre-trained X-Mod checkpoint directory (or hub id)", required=True)
    task: str = setting("nli", "nli | ner | pos | qa | mc | retrieval")
    train: list[str] = setting([], "training file in the task's format (XNLI TSV, CoNLL, UD TSV, SQuAD JSON, XCOPA "
                                   "jsonl); retrieval: LANG=FILE, one per language", split=False, required=True)
    source_lang: str = setting("en_XX", "language of the training data; its module is used (must be a model language)",
                               check=validate_code)
    out_dir: str = setting("runs/finetune", "output: fine-tuned model, tokenizer, task.json, checkpoint/, "
                                            "metrics.jsonl", flags=("--out",))
    tokenizer: str | None = setting(None, "tokenizer directory (default: the model's directory)")
    valid: str | None = setting(None, "validation file in the source language, scored every --eval-every steps "
                                      "(shown on the progress bar) and at the end")
    valid_range: str | None = setting(None, "use validation examples START:END by index, e.g. --valid dev-en.tsv "
                                            "--valid-range 1500: to track the English pairs left out by "
                                            "--train-range 0:1500")
    epochs: float = setting(5.0, "passes over the training data (sets max_steps unless --max-steps is given)",
                           above=0)
    max_steps: int | None = setting(None, "optimizer updates (default: epochs x batches per epoch / grad_accum)")
    batch_size: int = setting(32, "examples per batch (global, across processes); QA: windows per batch",
                              low=1)
    max_length: int | None = setting(None, "tokens per input (default: QA 384, others 128, capped by the model)",
                                     low=8)
    stride: int | None = setting(None, "QA: tokens shared by consecutive windows (default: max_length / 3)",
                                 low=0)
    full_finetune: bool = setting(False, "train every parameter, embeddings and language modules included")
    train_limit: int | None = setting(None, "use only the first N training examples (after --train-range)", low=1)
    train_range: str | None = setting(None, "use training examples START:END by index, e.g. 0:999 to train on "
                                            "part of XNLI dev and evaluate the rest with --eval-range 999: (XNLI "
                                            "dev holds 3 consecutive pairs per premise: multiples of 3 keep "
                                            "premises whole)")
    lr: float | None = setting(None, "peak learning rate (default: 1e-5, fairseq's NLI recipe, for models of width "
                                     "768 and more; 1e-3 for narrower ones, where 1e-5 leaves the loss at chance)")
    warmup_ratio: float = setting(0.06, "warm-up as a fraction of the updates")
    save_every: int = setting(1000, "checkpoint every N steps (and at the end)")
    pivot: str | None = setting(None, "retrieval: the --train language every other one is paired with (default: "
                                      "the last --train item)")
    layer: int | None = setting(None, "retrieval: layer whose pooled states the contrastive loss trains, 0 = "
                                      "embeddings, -1 = last (default: the middle layer)", low=-257, high=256)
    pooling: str | None = setting(None, "retrieval: mean | cls (default: mean)")
    temperature: float = setting(0.05, "retrieval: temperature of the in-batch contrastive loss (cosines / this)",
                               above=0)

    def __post_init__(self):
        if isinstance(self.train, (str, Path)):  # one file, as Python callers pass it
            self.train = [str(self.train)] if str(self.train) else []
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}; it must be > 0")
        # None means "from the epochs"; TrainConfig validates every other field.
        steps = self.max_steps
        if steps is not None and steps < 1:
            raise ValueError(f"max_steps={steps}; it must be >= 1 (or unset: from --epochs)")
        self.max_steps = steps or 1
        lr, self.lr = self.lr, self.lr if self.lr is not None else 1.0
        super().__post_init__()
        self.max_steps, self.lr = steps, lr
        if self.epochs <= 0:
            raise ValueError(f"epochs={self.epochs}; it must be > 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}; it must be >= 1")


class TaskBatches:
    """Endless batches of task features for one language, reshuffled every epoch; resumable exactly.

    Epoch e visits the features in the permutation drawn from numpy's generator seeded with (seed, e), so the
    state is (epoch, position) plus the seed and the data's size (checked on resume). Every batch holds
    ``batch_size`` features, the last of an epoch what is left (dropped only when it has fewer rows than there
    are processes). Under torchrun, process r takes rows r, r + world_size, ... of each global batch.
    """

    def __init__(self, features: Sequence[dict], collate: Callable[[Sequence[dict]], dict], batch_size: int,
                 seed: int, lang_id: int, rank: int = 0, world_size: int = 1):
        if not features:
            raise ValueError("no training features")
        if batch_size < world_size:
            raise ValueError(f"batch size {batch_size} is smaller than the number of processes {world_size}")
        self.features, self.collate, self.batch_size = features, collate, batch_size
        self.seed, self.lang_id, self.rank, self.world_size = seed, lang_id, rank, world_size
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(len(self.features), self.batch_size)
        return full + (rest >= self.world_size)

    def _permutation(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.features)).tolist()

    def __iter__(self) -> TaskBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if len(self.features) - self.position < self.world_size:  # epoch done (or a remainder too small to share)
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        rows = self._order[self.position:self.position + self.batch_size]
        self.position += len(rows)
        mine = rows[self.rank::self.world_size]
        batch = self.collate([self.features[i] for i in mine])
        batch.setdefault("lang_ids", torch.full((len(mine),), self.lang_id, dtype=torch.long))  # unless per row
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "features": len(self.features), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        changed = {k: (state.get(k), mine[k]) for k in ("features", "batch_size") if state.get(k) != mine[k]}
        if changed:
            raise ValueError(f"the checkpoint's data position was made for other data (checkpoint, now): {changed}; "
                             "the training file, its range/limit, --max-length or --batch-size changed; "
                             "use a new --out to start afresh")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)


def trainable_filter(full_finetune: bool) -> Callable[[str], bool]:
    """Parameter names that train: all, or all but embeddings, language modules and adapter_layer_norm."""
    if full_finetune:
        return lambda name: True
    return lambda name: not is_embedding_or_module_param(name)


# Fine-tuning learning rates by model width: fairseq's 1e-5 is for base-size pre-trained models; narrower ones (the
# README's demo and benchmark models, width 64-128) stayed at chance with it (see default_lr's measurements).
WIDE_MODEL, BASE_LR, SMALL_MODEL_LR = 768, 1e-5, 1e-3


def default_lr(hidden_size: int) -> float:
    """--lr when unset: fairseq's 1e-5 from width 768 up, 1e-3 below."""
    return BASE_LR if hidden_size >= WIDE_MODEL else SMALL_MODEL_LR


def train_config(s: FinetuneSettings, max_steps: int, lr: float | None = None) -> TrainConfig:
    values = {f.name: getattr(s, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**values, "max_steps": max_steps, "lr": lr if lr is not None else s.lr})


def predicted_labels(predictions) -> list | None:
    """Every label a task's predictions hold (one per example, or one per token), or None (QA: answer texts)."""
    if isinstance(predictions, dict):
        return None
    return [label for p in predictions for label in (p if isinstance(p, (list, tuple)) else [p])]


def learning_warnings(task, record: dict, labels: Sequence[str] | None, predicted: list | None,
                      first_loss: float | None = None) -> list[str]:
    """Signs that fine-tuning learned nothing: the training loss still at chance (ln K for K classes of a
    sequence classifier), a loss that fell less than 10% from the first logged window to the last, or one label
    predicted for everything."""
    notes = []
    loss = record.get("loss")
    at_chance = False
    if labels and len(labels) > 1 and task.head.__name__ == "XmodForSequenceClassification" and loss is not None:
        chance = math.log(len(labels))
        if loss > 0.97 * chance:
            at_chance = True
            notes.append(f"the training loss ended at {loss:.3f}, chance level for {len(labels)} labels "
                         f"(ln {len(labels)} = {chance:.3f}): the model has not learned the task")
    if not at_chance and loss is not None and first_loss and loss > 0.9 * first_loss:
        notes.append(f"the training loss fell only {1 - loss / first_loss:.0%} (from {first_loss:.3f} to {loss:.3f})")
    if predicted and len(set(predicted)) == 1 and (labels is None or len(labels) > 1):
        only = predicted[0]
        name = labels[only] if labels is not None and isinstance(only, int) and 0 <= only < len(labels) else only
        notes.append(f"it predicts {name!r} for all of {len(predicted)} checked "
                     f"{'tokens' if task.head.__name__ == 'XmodForTokenClassification' else 'examples'}")
    return notes


def logged_records(path: Path) -> list[dict]:
    """metrics.jsonl's records (a line cut short by a kill skipped)."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def last_logged(path: Path, record: dict) -> dict:
    """The metrics.jsonl line of record's step, or record itself when there is none."""
    if path.is_file():
        for line in reversed(path.read_text(encoding="utf-8").splitlines()):
            try:
                logged = json.loads(line)
            except json.JSONDecodeError:
                continue
            if logged.get("step") == record["step"]:
                return logged
    return record


def run(s: FinetuneSettings) -> dict:
    """Fine-tune; one run per --out (files.run_lock: a second run on the same directory stops with a message)."""
    rank = dist_info()[0]
    with run_lock(s.out_dir, "finetune") if rank == 0 else contextlib.nullcontext():
        return _run(s)


def _run(s: FinetuneSettings) -> dict:
    """Fine-tune, save model + tokenizer + task.json to --out; return the final metrics with what was trained."""
    task = task_named(s.task)
    if task.recipe is not None:  # a task trained without a head (retrieval) runs its own fine-tuning
        return importlib.import_module(task.recipe).finetune(s)
    for flag in ("model", "train"):
        if not getattr(s, flag):
            raise ValueError(f"--{flag} is required")
    if len(s.train) != 1:
        raise ValueError(f"--train names {len(s.train)} files; {task.name} trains on one")
    train_file = s.train[0]
    directory = resolve_pretrained(s.model)
    config = XmodConfig.from_pretrained(directory)  # config only: check the language before loading weights
    if s.source_lang not in config.languages and "_" not in s.source_lang:  # an ISO code: the model's, if one fits
        matches = [c for c in config.languages if c.split("_", 1)[0].lower() == s.source_lang.lower()]
        s.source_lang = matches[0] if len(matches) == 1 else s.source_lang
    if s.source_lang not in config.languages:
        raise ValueError(f"source language {s.source_lang!r} is not one of the model's languages "
                         f"{config.languages}; --source-lang names the training data's language, whose module trains")
    max_length = resolve_max_length(s.max_length, task, config)
    stride = resolve_stride(s.stride, task, max_length)
    tokenizers = tok_mod.load_model_tokenizers(directory, s.tokenizer)
    tok_mod.check_tokenizer_fits(tok_mod.shared_tokenizer(tokenizers), config, str(s.tokenizer or directory), s.model)
    tok = tok_mod.for_language(tokenizers, s.source_lang)  # the training data's language: its own, if it has one
    examples = select(load_examples(task, train_file), s.train_range, s.train_limit, "train")
    labels = task.label_list(examples) if task.label_list is not None else None
    setup = Setup(labels=tuple(labels) if labels is not None else None, stride=stride, lang=s.source_lang)
    features = task.featurize(examples, tok, max_length, setup)
    valid = None
    if s.valid_range and not s.valid:
        raise ValueError("--valid-range selects examples of --valid; pass --valid FILE too")
    if s.valid:
        valid_examples = select(load_examples(task, s.valid), s.valid_range, None, "valid")
        valid = (valid_examples, task.featurize(valid_examples, tok, max_length, setup))

    torch.manual_seed(s.seed)  # the new head's initialisation
    model = task.head.from_pretrained(directory, **head_overrides(labels))
    lang_id = model.config.languages.index(s.source_lang)
    rank, world, _ = dist_info()
    if s.batch_size % world:
        raise ValueError(f"--batch-size {s.batch_size} must be divisible by the number of processes {world}")
    batches = TaskBatches(features, task.collate, s.batch_size, s.seed, lang_id, rank, world)
    max_steps = s.max_steps or max(1, math.ceil(s.epochs * batches.batches_per_epoch / s.grad_accum))
    lr = s.lr if s.lr is not None else default_lr(model.config.hidden_size)
    if s.lr is None:
        logger.info("learning rate %g (width %d; --lr to choose)", lr, model.config.hidden_size)
    evaluate = None
    if valid is not None:
        evaluate = evaluator(task, valid[0], valid[1], lang_id, s.batch_size, setup)
    fixed = {"task": s.task, "source_lang": s.source_lang, "batch_size": s.batch_size, "max_length": max_length,
             "stride": stride, "full_finetune": s.full_finetune, "train_range": s.train_range,
             "train_limit": s.train_limit, "labels": list(labels) if labels is not None else None}
    trainer = Trainer(model, train_config(s, max_steps, lr), batches, evaluate,
                      trainable=trainable_filter(s.full_finetune), fixed=fixed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("fine-tuning %s on %s: %d examples (%d features), %d steps", task.name, s.source_lang,
                len(examples), len(features), max_steps)
    record = trainer.fit(export_dir=s.out_dir)  # the final weights, written by rank 0
    if len(record) == 1:  # a finished run, rerun: report the metrics it logged at its last step
        record = last_logged(Path(s.out_dir) / "metrics.jsonl", record)
    if world == 1:  # what the model predicts now, on held-out examples if there are any, else on training ones
        checked = (valid[0] if valid is not None else examples)[:256]
        check_features = task.featurize(checked, tok, max_length, setup)
        with torch.no_grad():
            outputs = predict(trainer.model, task, check_features, lang_id, s.batch_size)
        predicted = predicted_labels(task.decode(checked, check_features, outputs, setup))
        losses = [r["loss"] for r in logged_records(Path(s.out_dir) / "metrics.jsonl") if "loss" in r]
        first_loss = losses[0] if len(losses) >= 2 else None
        for note in learning_warnings(task, record, labels, predicted, first_loss):
            logger.warning("fine-tuning learned nothing visible: %s. Try a larger --lr (this run: %g) or more "
                           "--epochs; --valid FILE --eval-every N shows the score as it trains", note, lr)

    summary = {"task": task.name, "labels": labels, "source_lang": s.source_lang, "max_length": max_length,
               "stride": stride, "train": train_file, "train_examples": len(examples), "train_features": len(features),
               "max_steps": max_steps, "lr": lr, "full_finetune": s.full_finetune, "trainable_parameters": trainable,
               "parameters": total, "metrics": record, "settings": dataclasses.asdict(s)}
    if rank == 0:
        out = Path(s.out_dir)
        tok_mod.save_tokenizers(tokenizers, out)  # the languages' own ones too: the model keeps their rows
        atomic_write_text(out / TASK_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step" and isinstance(v, float))
        print(f"fine-tuned {task.name} on {s.source_lang} ({len(examples)} examples, {record['step']} steps; {shown}) "
              f"-> {out}")
    return {"out_dir": s.out_dir, **summary}
