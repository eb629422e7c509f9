"""Pre-training recipe: per-language corpora -> tokenizer -> X-Mod (or shared) masked-LM training.

What trains: everything (language modules from the start, together with the shared weights).
Data: one language per batch, languages sampled with p_l ~ n_l^alpha (``--mixed-batches`` mixes
them within a batch). Loss: masked LM. ``--shared`` trains the paper's baseline: one module
used by every language, so each language uses the same number of parameters as in X-Mod.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .. import data as data_mod
from .. import tokenizer as tok_mod
from .. import vocab as vocab_mod
from ..config import preset, validate_code
from ..files import atomic_write_text, run_lock
from ..model import XmodForMaskedLM
from ..settings import setting
from ..trainer import Trainer, TrainConfig, dist_info, find_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class PretrainSettings(TrainConfig):
    data: str = setting("", "directory of per-language files <code>.txt or <code>.txt.gz, one sentence a line "
                                "(or --hf-dataset)", required=True)
    hf_dataset: str | None = setting(None, "stream a Hugging Face dataset instead of --data, e.g. cc100 (its config "
                                           "is the code's language part: sw for sw_KE); needs `datasets` online")
    hf_lines: int = setting(100_000, "lines per language taken from --hf-dataset (streamed to OUT/data/<code>.txt)",
                            low=1)
    languages: list[str] = setting([], "language codes, in id order (default: every file in --data, sorted)",
                                  check=validate_code)
    out_dir: str = setting("runs/pretrain", "output: HF checkpoint, tokenizer, trainer state, metrics.jsonl",
                           flags=("--out",))
    preset: str = setting("tiny", "architecture: tiny | small | base | large-prenorm")
    hidden_size: int | None = setting(None, "override the preset's hidden size", low=1)
    num_hidden_layers: int | None = setting(None, "override the preset's number of layers", low=1)
    adapter_reduction_factor: int | None = setting(None, "override the module bottleneck: hidden / this", low=1)
    dropout: float | None = setting(None, "override hidden and attention dropout (preset: 0.1)", low=0,
                                     below=1)
    tokenizer: str | None = setting(None, "existing tokenizer directory (tokenizer.json); default: train one")
    vocab_size: int = setting(8000, "vocabulary size of the trained tokenizer", low=16)
    seq_len: int = setting(128, "tokens per packed row", low=4)
    batch_size: int = setting(16, "rows per optimizer micro-batch (global, across processes)", low=1)
    alpha: float = setting(0.3, "language sampling exponent: p_l ~ n_l^alpha (XLM-R: 0.3)", low=0)
    mixed_batches: bool = setting(False, "mix languages within a batch instead of one language per batch")
    shared: bool = setting(False, "train the shared baseline: one module used by every language")
    valid_lines: int = setting(200, "last lines of every language held out for validation", low=1)
    valid_batches: int = setting(4, "validation batches per language (perplexity)", low=1)
    max_steps: int = setting(1000, "optimizer updates")
    lr: float = setting(5e-4, "peak learning rate")
    warmup_ratio: float = setting(0.06, "warm-up as a fraction of max_steps")
    eval_every: int = setting(0, "validation perplexity every N steps (0: at the end)")
    save_every: int = setting(500, "checkpoint every N steps")


@dataclass
class TokenizerSettings:
    data: str = setting("", "directory of per-language files <code>.txt[.gz]", required=True)
    out: str = setting("runs/tokenizer", "output directory (tokenizer.json + tokenizer_config.json)")
    vocab_size: int = setting(8000, "vocabulary size, special tokens included", low=16)
    languages: list[str] = setting([], "languages to train on (default: every file)", check=validate_code)
    alpha: float = setting(0.3, "sample language l with p ~ n_l^alpha", low=0)
    seed: int = setting(0, "sampling seed", low=0)


def select_corpora(data: str, languages: list[str]) -> dict[str, Path]:
    if not data:
        raise ValueError("--data is required: a directory of <code>.txt files")
    corpora = data_mod.discover_corpora(data)
    for code, path in corpora.items():
        try:
            validate_code(code)
        except ValueError as e:
            raise ValueError(f"{path}: {e}; a corpus file is named <code>.txt or <code>.txt.gz") from None
    if not languages:
        return corpora
    missing = [code for code in languages if code not in corpora]
    if missing:
        raise ValueError(f"no corpus for {missing} in {data}; files there: {sorted(corpora)}")
    return {code: corpora[code] for code in languages}


def train_tokenizer_cmd(s: TokenizerSettings) -> Path:
    corpora = select_corpora(s.data, s.languages)
    tok = tok_mod.train_tokenizer(corpora, vocab_size=s.vocab_size, alpha=s.alpha, seed=s.seed)
    tok_mod.save_tokenizer(tok, s.out)
    print(f"tokenizer with {tok.get_vocab_size()} pieces for {len(corpora)} languages -> {s.out}")
    return Path(s.out)


def train_config(s: TrainConfig) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(s, f.name) for f in fields(TrainConfig)})


def perplexity_evaluator(valid: dict[str, list[dict]]):
    """model -> {"ppl/<code>": validation perplexity, "ppl/mean": their mean} (token-weighted loss)."""

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        results = {}
        for code, batches in valid.items():
            total, count = 0.0, 0
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                n = int(batch["labels"].ne(-100).sum())
                if n:
                    total += float(model(**batch).loss) * n
                    count += n
            results[f"ppl/{code}"] = math.exp(total / max(count, 1))
        results["ppl/mean"] = sum(results.values()) / max(len(results), 1)
        return results

    return evaluate


def fetch_hf_corpora(name: str, languages: list[str], lines: int, directory: Path) -> Path:
    """Stream the first ``lines`` lines of each language of a Hugging Face dataset to ``<code>.txt`` files.

    Files already there (an earlier, possibly interrupted run) are kept: each is written to a
    temporary name and renamed when complete, so a file present is a whole one.
    """
    import itertools

    if not languages:
        raise ValueError("--hf-dataset needs --languages (e.g. en_XX,sw_KE): the dataset's configs are not listed")
    directory.mkdir(parents=True, exist_ok=True)
    for code in languages:
        path = directory / f"{code}.txt"
        if path.exists():
            continue
        stream = data_mod.hf_dataset_lines(name, code.split("_")[0], "train")
        first = itertools.islice((t.strip() for t in stream if t.strip()), lines)
        atomic_write_text(path, (line + "\n" for line in first))
    return directory


def check_resumable(out: Path, languages: list[str], shared: bool) -> None:
    """A checkpoint in ``out`` resumes only the same languages and model kind: say what changed, before any work."""
    checkpoint = find_checkpoint(out)
    if checkpoint is None or not (checkpoint / "config.json").is_file():
        return
    saved = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    before = list(saved.get("languages") or [])
    if before and before != languages:
        added, removed = [c for c in languages if c not in before], [c for c in before if c not in languages]
        change = "; ".join(part for part in (f"added {','.join(added)}" if added else "",
                                             f"removed {','.join(removed)}" if removed else "") if part)
        raise ValueError(f"{out} holds a run pre-trained on --languages {','.join(before)}; this run asks for "
                         f"{','.join(languages)} ({change or 'another order'}). Use a new --out for the new "
                         f"languages (or `xmodlm add-language` to add one to the finished model), or "
                         f"--languages {','.join(before)} to resume")
    if bool(saved.get("shared_module", False)) != shared:
        raise ValueError(f"{out} holds a {'shared' if saved.get('shared_module') else 'X-Mod'} run; this run asks for "
                         f"{'--shared' if shared else '--no-shared'}. Use a new --out, or the same flag to resume it")


def run(s: PretrainSettings) -> dict[str, float]:
    """Pre-train; one run per --out (files.run_lock: a second run on the same directory stops with a message)."""
    rank = dist_info()[0]
    with run_lock(s.out_dir, "pretrain") if rank == 0 else contextlib.nullcontext():
        return _run(s)


def _run(s: PretrainSettings) -> dict[str, float]:
    if s.hf_dataset:
        s.data = str(fetch_hf_corpora(s.hf_dataset, s.languages, s.hf_lines, Path(s.out_dir) / "data"))
    corpora = select_corpora(s.data, s.languages)
    languages = list(corpora)
    out = Path(s.out_dir)
    check_resumable(out, languages, s.shared)
    rank, world, _ = dist_info()
    if s.batch_size % world:
        raise ValueError(f"--batch-size {s.batch_size} must be divisible by the number of processes {world}")
    if s.tokenizer:
        tok = tok_mod.load_tokenizer(s.tokenizer)
    elif (out / "tokenizer.json").exists():  # a resumed run keeps its vocabulary
        tok = tok_mod.load_tokenizer(out)
    elif world > 1:
        raise ValueError("under torchrun, train the tokenizer first (xmodlm tokenizer train) and pass --tokenizer, "
                         "so that every process uses the same vocabulary")
    else:  # the validation tail stays unseen by the tokenizer too
        logger.info("training a %d-piece tokenizer on %d languages", s.vocab_size, len(corpora))
        tok = tok_mod.train_tokenizer(corpora, vocab_size=s.vocab_size, alpha=s.alpha, seed=s.seed,
                                      skip_lines=s.valid_lines)
    overrides = {k: getattr(s, k) for k in ("hidden_size", "num_hidden_layers", "adapter_reduction_factor")
                 if getattr(s, k) is not None}
    if s.dropout is not None:
        overrides.update(hidden_dropout_prob=s.dropout, attention_probs_dropout_prob=s.dropout)
    config = preset(s.preset, vocab_size=tok.get_vocab_size(), languages=languages, shared_module=s.shared,
                    **overrides)
    config.max_position_embeddings = max(config.max_position_embeddings, s.seq_len + 2)  # RoBERTa offset
    config.extra[tok_mod.FINGERPRINT_KEY] = tok_mod.tokenizer_fingerprint(tok)  # checked wherever the model loads
    torch.manual_seed(s.seed)
    model = XmodForMaskedLM(config)
    train = data_mod.MLMBatches(corpora, tok, languages, seq_len=s.seq_len, batch_size=s.batch_size,
                                alpha=s.alpha, seed=s.seed, mode="mixed" if s.mixed_batches else "per_language",
                                skip_lines=s.valid_lines, rank=rank, world_size=world, count_tokens=True)
    valid = data_mod.validation_batches(corpora, tok, languages, seq_len=s.seq_len, batch_size=s.batch_size,
                                        valid_lines=s.valid_lines, max_batches=s.valid_batches, seed=s.seed)
    n_params = model.num_parameters()
    logger.info("%s model: %d parameters, %d languages", "shared" if s.shared else "X-Mod", n_params, len(languages))
    fixed = {k: getattr(s, k) for k in ("batch_size", "seq_len", "alpha", "mixed_batches", "shared", "preset",
                                         "hidden_size", "num_hidden_layers", "adapter_reduction_factor", "dropout",
                                         "valid_lines")}
    fixed.update(languages=languages, vocab_size=config.vocab_size, tokenizer=config.extra[tok_mod.FINGERPRINT_KEY])
    trainer = Trainer(model, train_config(s), train, perplexity_evaluator(valid), fixed=fixed)
    record = trainer.fit(export_dir=out)  # the final weights, written by rank 0
    if train.report:  # lines skipped while training: per file, how many of how many read, and why
        logger.warning("corpus: %s", train.report.summary())
    if rank == 0:
        tok_mod.save_tokenizer(tok, out)
        # How often each vocabulary row was trained on (exact under resume: the counts are in the data state).
        vocab_mod.write_counts(out, train.token_counts, [{"what": "pretrain", "languages": languages,
                                                          "steps": trainer.step}])
        summary = {"languages": languages, "shared": s.shared, "parameters": n_params, **record}
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
        print(format_perplexities(record))
        print(f"saved: model and tokenizer -> {out} (results.json, metrics.jsonl; checkpoint/ to resume)")
    return record


def format_perplexities(record: dict[str, float]) -> str:
    rows = [(k.rsplit("/", 1)[1], v) for k, v in record.items() if k.startswith("eval/ppl/")]
    width = max([len("language")] + [len(code) for code, _ in rows])
    lines = [f"{'language':<{width}}  perplexity", f"{'-' * width}  ----------"]
    lines += [f"{code:<{width}}  {ppl:10.2f}" for code, ppl in rows]
    return "\n".join(lines)
