"""Add-a-language recipe: new modules in every layer, trained with masked LM on the new language.

What trains: only the new language's modules. Everything else (embeddings, attention,
feed-forward, every LayerNorm, the other languages' modules, the LM head) is frozen, so
every language the model already had keeps bit-identical outputs. Data: one file (or a
directory's ``<code>.txt``) in the new language. Loss: masked LM. Same training loop as
pre-training.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data as data_mod
from .. import tokenizer as tok_mod
from ..files import atomic_write_text, run_lock
from ..config import validate_code
from ..model import XmodForMaskedLM, module_language
from ..settings import setting
from ..trainer import Trainer, TrainConfig, dist_info
from .pretrain import format_perplexities, perplexity_evaluator, train_config


@dataclass
class AddLanguageSettings(TrainConfig):
    model: str = setting("", "pre-trained X-Mod checkpoint directory (or hub id)")
    lang: str = setting("", "code of the new language, e.g. sw_KE", check=validate_code)
    data: str = setting("", "text in the new language: a file, one sentence a line (.txt or .txt.gz)")
    out_dir: str = setting("runs/add-language", "output checkpoint directory", flags=("--out",))
    init_from: list[str] = setting([], "initialise from these languages' modules (one: copy; several: average)",
                                  check=validate_code)
    tokenizer: str | None = setting(None, "tokenizer directory (default: the model's directory)")
    seq_len: int = setting(128, "tokens per packed row", low=4)
    batch_size: int = setting(16, "rows per batch", low=1)
    valid_lines: int = setting(200, "last lines of the file held out for validation", low=1)
    valid_batches: int = setting(4, "validation batches (perplexity)", low=1)
    max_steps: int = setting(500, "optimizer updates")
    lr: float = setting(1e-3, "peak learning rate (only the new modules train)")
    warmup_ratio: float = setting(0.06, "warm-up as a fraction of max_steps")
    save_every: int = setting(250, "checkpoint every N steps")


class ConstantLanguage:
    """Batches of one corpus routed to language ``lang_id`` of the model (resumable like its source)."""

    def __init__(self, batches: data_mod.MLMBatches, lang_id: int):
        self.batches, self.lang_id = batches, lang_id

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = next(self.batches)
        batch["lang_ids"] = torch.full_like(batch["lang_ids"], self.lang_id)
        return batch

    def state_dict(self):
        return self.batches.state_dict()

    def load_state_dict(self, state) -> None:
        self.batches.load_state_dict(state)


def new_module_filter(code: str):
    """Parameter names that train when adding ``code``: its modules, nothing else."""
    return lambda name: module_language(name) == code


def run(s: AddLanguageSettings) -> dict[str, float]:
    """Add a language; one run per --out (files.run_lock: a second run on the same directory stops with a message)."""
    rank = dist_info()[0]
    with run_lock(s.out_dir, "add-language") if rank == 0 else contextlib.nullcontext():
        return _run(s)


def _run(s: AddLanguageSettings) -> dict[str, float]:
    for flag in ("model", "lang", "data"):
        if not getattr(s, flag):
            raise ValueError(f"--{flag} is required")
    path = Path(s.data)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected text in {s.lang}, one sentence a line)")
    out = Path(s.out_dir)
    resumed = (out / "checkpoint").exists() or (out / "checkpoint.old").exists()
    model = XmodForMaskedLM.from_pretrained(s.model)
    if model.config.shared_module:
        raise ValueError(f"{s.model} is a shared-module baseline: it has no per-language modules to add")
    tok = tok_mod.load_tokenizer(s.tokenizer or s.model)
    tok_mod.check_tokenizer_fits(tok, model.config, str(s.tokenizer or s.model), s.model)
    model.config.extra.setdefault(tok_mod.FINGERPRINT_KEY, tok_mod.tokenizer_fingerprint(tok))
    torch.manual_seed(s.seed)
    lang_id = model.add_language(s.lang, init_from=s.init_from or None)
    rank, world, _ = dist_info()
    corpora = {s.lang: path}
    batches = data_mod.MLMBatches(corpora, tok, [s.lang], seq_len=s.seq_len, batch_size=s.batch_size,
                                  seed=s.seed, skip_lines=s.valid_lines, rank=rank, world_size=world)
    valid = data_mod.validation_batches(corpora, tok, [s.lang], seq_len=s.seq_len, batch_size=s.batch_size,
                                        valid_lines=s.valid_lines, max_batches=s.valid_batches, seed=s.seed)
    for batch in valid[s.lang]:
        batch["lang_ids"] = torch.full_like(batch["lang_ids"], lang_id)
    trainer = Trainer(model, train_config(s), ConstantLanguage(batches, lang_id), perplexity_evaluator(valid),
                      trainable=new_module_filter(s.lang),
                      fixed={"lang": s.lang, "init_from": s.init_from, "seq_len": s.seq_len, "batch_size": s.batch_size,
                             "valid_lines": s.valid_lines, "languages": model.config.languages})
    record = trainer.fit(export_dir=out)  # the final weights, written by rank 0
    if batches.report:  # lines skipped while training: per file, how many of how many read, and why
        logging.getLogger(__name__).warning("corpus: %s", batches.report.summary())
    if rank == 0:
        tok_mod.save_tokenizer(tok, out)
        summary = {"added": s.lang, "id": lang_id, "init_from": s.init_from, "resumed": resumed,
                   "trainable_parameters": sum(p.numel() for n, p in model.named_parameters()
                                               if new_module_filter(s.lang)(n)), **record}
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
        print(format_perplexities(record))
    return record
