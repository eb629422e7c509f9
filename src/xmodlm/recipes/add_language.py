"""Add-a-language recipe: new modules in every layer, trained with masked LM on the new language.

Vocabulary (``--vocabulary``):

- ``own`` (default): the language gets a tokenizer of its own (``vocab.own_tokenizer``: ``--extend-vocab`` pieces
  trained on its text) and one new row per piece, appended after every existing row; a piece the shared vocabulary
  has starts as a copy of its row, the others by ``--embed-init``. Its masked-LM softmax covers its rows
  (``config.vocab_range``). Its tokenizer goes to ``<out>/tokenizers/<code>/``; the shared ``tokenizer.json`` is
  padded with placeholders to the new size (no text changes ids). What trains: its modules and its rows.
- ``extend``: the shared tokenizer, with pieces appended only for characters it lacks (``vocab.extend_tokenizer``,
  automatic by default), plus the rows pre-training never saw that the language uses (from the checkpoint's
  ``vocab_counts.json``; a checkpoint without counts, e.g. facebook/xmod-base, trains only the new rows, since
  nothing says which old rows are unused).

Everything else (the shared rows, attention, feed-forward, every LayerNorm, the other languages' modules, the rest
of the LM head) is frozen: only the chosen rows of the embedding matrix get a gradient (``vocab.train_rows_only``),
and the matrix is in the optimizer group without weight decay, so the other rows stay bit-identical.

What stays bit-identical for the languages the model already had: their encoder outputs and their masked-LM scores
(``config.extra["language_vocab_sizes"]`` keeps each old language's softmax to the old rows), on all their text
with ``own``; with ``extend``, on every text without a never-seen piece that the addition trained
(``unseen_rows_trained`` in results.json). In transformers' XmodForMaskedLM, which does not read the limits, every
language's softmax spans every row (its logits for its own rows are the same).

Data: one file in the new language. Loss: masked LM. Same training loop as pre-training.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from .. import tokenizer as tok_mod
from .. import vocab as vocab_mod
from ..config import validate_code
from ..files import atomic_write_text, run_lock
from ..model import XmodForMaskedLM, module_language
from ..settings import setting
from ..trainer import Trainer, TrainConfig, dist_info
from .pretrain import format_perplexities, perplexity_evaluator, train_config


VOCABULARIES = ("own", "extend")


def _check_vocabulary(value: str) -> None:
    if value not in VOCABULARIES:
        raise ValueError(f"--vocabulary {value!r}; expected one of {', '.join(VOCABULARIES)}")


@dataclass
class AddLanguageSettings(TrainConfig):
    model: str = setting("", "pre-trained X-Mod checkpoint directory (or hub id)", required=True)
    lang: str = setting("", "code of the new language, e.g. sw_KE", required=True, check=validate_code)
    data: str = setting("", "text in the new language, one sentence a line: a file (.txt or .txt.gz), or a directory "
                            "holding <lang>.txt[.gz]", required=True)
    out_dir: str = setting("runs/add-language", "output checkpoint directory", flags=("--out",))
    init_from: list[str] = setting([], "initialise from these languages' modules (one: copy; several: average)",
                                  check=validate_code)
    tokenizer: str | None = setting(None, "tokenizer directory (default: the model's directory)")
    seq_len: int = setting(128, "tokens per packed row", low=4)
    batch_size: int = setting(16, "rows per batch", low=1)
    valid_lines: int = setting(200, "last lines of the file held out for validation", low=1)
    valid_batches: int = setting(4, "validation batches (perplexity)", low=1)
    max_steps: int = setting(500, "optimizer updates")
    # 3e-3 (was 1e-3): on two bible languages outside the addition experiment's table (ukr_Cyrl, new script;
    # quc_Latn, known script) the lowest bits per character at 100, 300 and 1,000 updates of the rates for which more
    # updates never made bits per character or seen-piece perplexity worse (README, "Adding a language post hoc").
    lr: float = setting(3e-3, "peak learning rate (only the new modules and the language's own rows train)")
    warmup_ratio: float = setting(0.06, "warm-up as a fraction of max_steps")
    save_every: int = setting(250, "checkpoint every N steps")
    vocabulary: str = setting("own", "own: the language gets a tokenizer of its own (--extend-vocab pieces trained "
                                     "on its text) and rows of its own, which train; the shared rows and tokenizer "
                                     "stay as they are | extend: the shared tokenizer, with pieces appended for the "
                                     "characters it lacks (and the never-seen rows the language uses train)",
                              check=_check_vocabulary)
    extend_vocab: int = setting(-1, "pieces trained on the new language: all of them form its own vocabulary "
                                    "(--vocabulary own), or those holding a character the vocabulary lacks are "
                                    "appended (extend); 0: off (the shared tokenizer as it is); -1: the vocabulary "
                                    "size / the number of languages (at least 100)", low=-1)
    embed_init: str = setting("overlap", "initialisation of new vocabulary rows: mean (drawn from the mean and "
                                         "covariance of the existing rows) | script (the same, per script) | "
                                         "overlap (mean of the rows of the old tokenizer's pieces of each new piece)")
    own_softmax: bool = setting(True, "own vocabulary: the language's masked-LM softmax covers only its rows (off: "
                                      "every row, as transformers computes it, which then scores it the same)")
    copy_rows: bool = setting(True, "own vocabulary: a piece the shared vocabulary has (with a trained row) starts "
                                    "as a copy of that row; off: every row starts from --embed-init")
    train_unseen_rows: bool = setting(True, "also train the rows that pre-training never saw and the new "
                                            "language uses (needs the checkpoint's vocab_counts.json)")


log = logging.getLogger(__name__)


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


def rows_and_modules(code: str):
    """Parameter names that train when adding ``code`` with vocabulary rows: its modules, the embedding matrix and
    the LM bias (of those two, only the chosen rows get a gradient)."""
    modules = new_module_filter(code)
    return lambda name: modules(name) or name in (vocab_mod.EMBEDDING, vocab_mod.LM_BIAS)


def _starting_vocabulary(s: AddLanguageSettings, model: XmodForMaskedLM, tok):
    """What both vocabulary modes start from: (rows before the addition, pieces to train, the checkpoint's row
    counts or None, the special tokens' ids, bool mask of the rows trained in pre-training without the specials:
    every row where there are no counts)."""
    old_size = model.config.vocab_size
    if tok.get_vocab_size() != old_size:
        raise ValueError(f"the tokenizer has {tok.get_vocab_size()} ids, the model {old_size} rows: they must match")
    found = vocab_mod.read_counts(s.model, old_size)
    counts = found[0] if found else None
    budget = s.extend_vocab if s.extend_vocab >= 0 else vocab_mod.default_budget(old_size, len(model.config.languages))
    special = [tok.token_to_id(t) for t in (*tok_mod.SPECIAL_TOKENS, tok_mod.MASK)]
    reference = np.ones(old_size, dtype=bool) if counts is None else counts > 0
    reference[special] = False
    return old_size, budget, counts, special, reference


def prepare_vocabulary(s: AddLanguageSettings, model: XmodForMaskedLM, tok, lines: list[str], out: Path,
                       resumed: bool) -> tuple[object, dict, np.ndarray | None, np.ndarray | None]:
    """Extend the tokenizer and the model's rows for the new language (or not), and choose the rows that train.

    Returns (tokenizer, vocabulary summary, bool mask of the rows that train or None, the checkpoint's counts
    extended to the new size or None)."""
    old_size, budget, counts, special, reference = _starting_vocabulary(s, model, tok)
    saved = out / "tokenizer.json"
    if resumed and saved.is_file():  # the extension this run started with (it is deterministic, but cheap to keep)
        new_tok = tok_mod.load_tokenizer(out)
        spec = json.loads(new_tok.to_str())["model"]["vocab"]
        pieces = [piece for piece, _ in spec[old_size:]]
        new_chars = vocab_mod.new_characters(tok, lines)
    else:
        ext = vocab_mod.extend_tokenizer(tok, lines, budget, seed=s.seed)
        new_tok, pieces, new_chars = ext.tokenizer, ext.pieces, ext.new_chars
    if pieces:
        emb = model.roberta.embeddings.word_embeddings.weight
        rows, bias = vocab_mod.init_new_rows(s.embed_init, emb, model.lm_head.bias, tok, pieces, reference,
                                             seed=s.seed)
        vocab_mod.resize_vocabulary(model, rows, bias)
    new_size = model.config.vocab_size
    trained = np.zeros(new_size, dtype=bool)
    trained[old_size:] = True
    unseen = 0
    if counts is not None and s.train_unseen_rows:
        used = vocab_mod.count_ids(new_tok, lines, new_size)[:old_size] > 0
        never = (counts == 0) & used
        never[special] = False
        trained[:old_size] = never
        unseen = int(never.sum())
    elif counts is None and s.train_unseen_rows:
        log.info("%s has no %s: only new rows train (which old rows are unused is unknown)", s.model,
                 vocab_mod.COUNTS_NAME)
    unk_before = vocab_mod.unk_rate(tok, lines)
    unk_after = vocab_mod.unk_rate(new_tok, lines) if pieces else unk_before
    summary = {"vocabulary": "extend", "old_vocab_size": old_size, "vocab_size": new_size, "added_pieces": len(pieces),
               "new_characters": len(new_chars), "unseen_rows_trained": unseen,
               "embed_init": s.embed_init if pieces else None, "vocab_counts": counts is not None,
               "unk_rate_before": unk_before[0] / max(unk_before[1], 1),
               "unk_rate_after": unk_after[0] / max(unk_after[1], 1)}
    extended = None if counts is None else np.concatenate([counts, np.zeros(new_size - old_size, np.int64)])
    return new_tok, summary, (trained if trained.any() else None), extended


def prepare_own_vocabulary(s: AddLanguageSettings, model: XmodForMaskedLM, tok, lines: list[str], out: Path,
                           resumed: bool) -> tuple[object, object, dict, np.ndarray, np.ndarray | None]:
    """Give the new language a tokenizer and rows of its own (``vocab.own_tokenizer``), appended after every
    existing row; its softmax covers only them (``config.vocab_range``), the old languages' only the old rows.

    Returns (the shared tokenizer padded to the new size, the language's tokenizer, vocabulary summary, bool mask of
    the rows that train, the checkpoint's counts extended to the new size or None)."""
    old_size, budget, counts, _, reference = _starting_vocabulary(s, model, tok)
    saved = tok_mod.language_tokenizer_dir(out, s.lang)
    if resumed and (saved / "tokenizer.json").is_file():  # the vocabulary this run started with
        lang_tok = tok_mod.load_tokenizer(saved)
        pieces = [piece for piece, _ in json.loads(lang_tok.to_str())["model"]["vocab"][old_size:]]
    else:
        own = vocab_mod.own_tokenizer(tok, lines, budget, old_size, seed=s.seed)
        lang_tok, pieces = own.tokenizer, own.pieces
    emb = model.roberta.embeddings.word_embeddings.weight
    copy = reference if s.copy_rows else np.zeros_like(reference)
    rows, bias = vocab_mod.init_own_rows(s.embed_init, emb, model.lm_head.bias, tok, pieces, reference, seed=s.seed,
                                         copy=copy)
    copied = sum(1 for p in pieces if (i := tok.token_to_id(p)) is not None and copy[i])
    vocab_mod.resize_vocabulary(model, rows, bias)
    new_size = model.config.vocab_size
    if s.own_softmax:
        model.config.extra.setdefault("language_vocab_starts", {})[s.lang] = old_size
        model.config.extra["language_vocab_sizes"][s.lang] = new_size
    trained = np.zeros(new_size, dtype=bool)
    trained[old_size:] = True
    unk_before, unk_after = vocab_mod.unk_rate(tok, lines), vocab_mod.unk_rate(lang_tok, lines)
    summary = {"vocabulary": "own", "old_vocab_size": old_size, "vocab_size": new_size, "added_pieces": len(pieces),
               "copied_rows": copied, "new_characters": len(vocab_mod.new_characters(tok, lines)),
               "unseen_rows_trained": 0, "embed_init": s.embed_init, "vocab_counts": counts is not None,
               "unk_rate_before": unk_before[0] / max(unk_before[1], 1),
               "unk_rate_after": unk_after[0] / max(unk_after[1], 1)}
    extended = None if counts is None else np.concatenate([counts, np.zeros(new_size - old_size, np.int64)])
    return vocab_mod.pad_tokenizer(tok, new_size), lang_tok, summary, trained, extended


def describe_vocabulary(v: dict) -> str:
    if v.get("vocabulary") == "own":
        return (f"vocabulary: its own, {v['added_pieces']} pieces trained on it ({v['copied_rows']} start as copies of "
                f"the shared rows of the same pieces, the others by {v['embed_init']}), ids {v['old_vocab_size']}-"
                f"{v['vocab_size'] - 1}; the shared tokenizer and rows stay as they are; <unk> in the training text "
                f"{v['unk_rate_before']:.2%} with the shared tokenizer -> {v['unk_rate_after']:.2%}")
    if not v["added_pieces"] and not v["unseen_rows_trained"]:
        why = "no new characters" if not v["new_characters"] else "extension off"
        return f"vocabulary: unchanged ({why}; {v['old_vocab_size']} ids)"
    init = f", initialised by {v['embed_init']}" if v["added_pieces"] else ""
    counts = "" if v["vocab_counts"] else " (no vocab_counts.json: only new rows train)"
    return (f"vocabulary: {v['added_pieces']} pieces added for {v['new_characters']} new characters "
            f"({v['old_vocab_size']} -> {v['vocab_size']} ids){init}; {v['unseen_rows_trained']} never-seen rows "
            f"train too{counts}; <unk> in the training text {v['unk_rate_before']:.2%} -> {v['unk_rate_after']:.2%}")


def corpus_file(path: Path, lang: str) -> Path:
    """``--data``: the file itself, or a directory's ``<lang>.txt`` / ``<lang>.txt.gz``."""
    if path.is_dir():
        found = [path / f"{lang}{suffix}" for suffix in (".txt", ".txt.gz") if (path / f"{lang}{suffix}").is_file()]
        if not found:
            present = sorted(p.name for p in path.iterdir() if p.name.endswith((".txt", ".txt.gz")))
            raise FileNotFoundError(f"--data {path} is a directory without {lang}.txt or {lang}.txt.gz (text files "
                                    f"there: {present or 'none'}); pass the file of {lang}, or a directory holding it")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file or directory (expected text in {lang}, one sentence "
                                "a line)")
    return path


def run(s: AddLanguageSettings) -> dict[str, float]:
    """Add a language; one run per --out (files.run_lock: a second run on the same directory stops with a message)."""
    rank = dist_info()[0]
    with run_lock(s.out_dir, "add-language") if rank == 0 else contextlib.nullcontext():
        return _run(s)


def _run(s: AddLanguageSettings) -> dict[str, float]:
    for flag in ("model", "lang", "data"):
        if not getattr(s, flag):
            raise ValueError(f"--{flag} is required")
    path = corpus_file(Path(s.data), s.lang)
    out = Path(s.out_dir)
    resumed = (out / "checkpoint").exists() or (out / "checkpoint.old").exists()
    model = XmodForMaskedLM.from_pretrained(s.model)
    if model.config.shared_module:
        raise ValueError(f"{s.model} is a shared-module baseline: it has no per-language modules to add")
    if s.embed_init not in vocab_mod.INIT_METHODS:
        raise ValueError(f"--embed-init {s.embed_init!r}; expected one of {', '.join(vocab_mod.INIT_METHODS)}")
    tok = tok_mod.load_tokenizer(s.tokenizer or s.model)
    tok_mod.check_tokenizer_fits(tok, model.config, str(s.tokenizer or s.model), s.model)
    lines = vocab_mod.training_lines(path, s.valid_lines)
    if s.vocabulary == "own" and s.extend_vocab != 0:
        shared_tok, tok, vocab, rows, counts = prepare_own_vocabulary(s, model, tok, lines, out, resumed)
    else:
        tok, vocab, rows, counts = prepare_vocabulary(s, model, tok, lines, out, resumed)
        shared_tok = tok
    model.config.extra[tok_mod.FINGERPRINT_KEY] = tok_mod.tokenizer_fingerprint(shared_tok)  # padded or extended
    torch.manual_seed(s.seed)
    lang_id = model.add_language(s.lang, init_from=s.init_from or None)
    rank, world, _ = dist_info()
    if rows is not None and s.strategy == "fsdp" and world > 1:
        raise ValueError("training vocabulary rows is not supported under --strategy fsdp; use ddp "
                         "(or --extend-vocab 0 --no-train-unseen-rows)")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        own = {**tok_mod.own_tokenizers(s.model), **({s.lang: tok} if tok is not shared_tok else {})}
        # before training: a resumed run reads the same vocabulary back
        tok_mod.save_tokenizers(tok_mod.LanguageTokenizers(shared_tok, own), out)
        print(describe_vocabulary(vocab))
    trainable = new_module_filter(s.lang)
    if rows is not None:
        vocab_mod.train_rows_only(model.roberta.embeddings.word_embeddings.weight, torch.from_numpy(rows))
        vocab_mod.train_rows_only(model.lm_head.bias, torch.from_numpy(rows))
        trainable = rows_and_modules(s.lang)
    corpora = {s.lang: path}
    batches = data_mod.MLMBatches(corpora, tok, [s.lang], seq_len=s.seq_len, batch_size=s.batch_size,
                                  seed=s.seed, skip_lines=s.valid_lines, rank=rank, world_size=world,
                                  count_tokens=True)
    valid = data_mod.validation_batches(corpora, tok, [s.lang], seq_len=s.seq_len, batch_size=s.batch_size,
                                        valid_lines=s.valid_lines, max_batches=s.valid_batches, seed=s.seed)
    for batch in valid[s.lang]:
        batch["lang_ids"] = torch.full_like(batch["lang_ids"], lang_id)
    trainer = Trainer(model, train_config(s), ConstantLanguage(batches, lang_id), perplexity_evaluator(valid),
                      trainable=trainable, no_decay=lambda name: name == vocab_mod.EMBEDDING,
                      fixed={"lang": s.lang, "init_from": s.init_from, "seq_len": s.seq_len, "batch_size": s.batch_size,
                             "valid_lines": s.valid_lines, "languages": model.config.languages,
                             "vocabulary": s.vocabulary, "extend_vocab": s.extend_vocab, "embed_init": s.embed_init,
                             "train_unseen_rows": s.train_unseen_rows, "copy_rows": s.copy_rows,
                             "own_softmax": s.own_softmax})
    record = trainer.fit(export_dir=out)  # the final weights, written by rank 0
    if batches.report:  # lines skipped while training: per file, how many of how many read, and why
        logging.getLogger(__name__).warning("corpus: %s", batches.report.summary())
    if rank == 0:
        if counts is not None:  # without the base's counts, partial ones would call used rows unseen: none written
            sources = vocab_mod.read_counts(s.model)[1] + [{"what": "add-language", "language": s.lang,
                                                             "first_new_id": vocab["old_vocab_size"],
                                                             "steps": trainer.step}]
            vocab_mod.write_counts(out, counts + batches.token_counts, sources)
        if not (s.strategy == "fsdp" and world > 1):  # the whole model is here: score per character too
            per_char = vocab_mod.mlm_loss_per_character(model, valid[s.lang], vocab_mod.piece_lengths(tok))
            vocab["eval/bits_per_char"] = per_char["bits_per_char"]
        n_rows = 0 if rows is None else int(rows.sum())
        n_module = sum(p.numel() for n, p in model.named_parameters() if new_module_filter(s.lang)(n))
        summary = {"added": s.lang, "id": lang_id, "init_from": s.init_from, "resumed": resumed,
                   "trainable_parameters": n_module + n_rows * (model.config.hidden_size + 1), **vocab, **record}
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
        print(format_perplexities(record))
        print(f"saved: model with {s.lang} (id {lang_id}) and tokenizer -> {out} (results.json, metrics.jsonl; "
              "checkpoint/ to resume)")
    return record
