"""The curse-of-multilinguality experiment: X-Mod against the shared baseline as the number of languages grows.

Protocol (the paper's "same number of examples per language" comparison, scaled down):
- For every k in ``--languages``, pre-train X-Mod and the shared baseline on the first k languages of one fixed
  order: the sorted codes of ``--data`` without the held-out language, or the synthetic languages syn00, syn01, ...
  (the first 16 are mutually unrelated families).
- A run on k languages trains ``k * --steps-per-language`` updates, one language per batch, languages drawn with
  p_l ~ n_l^alpha. The default alpha 0 draws them uniformly, so every language expects the same number of updates
  (steps_per_language) at every k, whatever its corpus size; ``updates`` in results.json are the measured counts.
  X-Mod and shared runs of one k use the same seed, schedule, batches and validation lines; they differ only in
  the modules (one per language, or one for all).
- One tokenizer, trained once on every language of the experiment (the largest k plus the held-out language, with
  the validation lines left out), serves every run, so perplexities are comparable across k and models. As in the
  paper (XLM-R's fixed vocabulary for every model), a k=2 run thus uses a vocabulary shared with languages it
  never sees.
- Score: validation perplexity of the masked LM on the last ``--valid-lines`` lines of every language, at the end.
- Post-hoc addition: the held-out language is added to the largest-k X-Mod model (add_language: only its new
  modules train, for ``--add-steps`` updates, by default steps_per_language: the updates it would get in joint
  pre-training), once with randomly initialised modules and once initialised from a related language. With
  ``--joint`` (default) an X-Mod model pre-trained on the k languages plus the held-out one from the start gives the
  reference perplexity.

- ``--seeds 0,1,2``: the whole experiment once per seed, each in OUT/seed{N}/ as with ``--seed N`` (every seed uses
  the first seed's tokenizer, copied), then results.json, report.md and plots in OUT with the mean and sample
  standard deviation over the seeds of every figure (perplexity, relative gain, retrieval accuracy, paired
  differences).
- ``--retrieval``: the same runs are scored on cross-lingual retrieval (recipes/retrieval_experiment.py), for corpora
  aligned by id (``<code>.ids``, as ../shared/data/bible) or by line: every language of each k against ``--pivot``
  (default: the first of the order, which every k includes), before fine-tuning; the runs of ``--finetune-k``
  (default: the largest k) also after contrastive fine-tuning on the pairs of ``--retrieval-finetune`` (default: the
  2nd-4th languages of the order) with the pivot, the other languages zero-shot; an untrained X-Mod of the largest
  shape; each of ``--related-pivots`` against its family's languages (languages.tsv); the held-out language through
  every X-Mod it was added to (after fine-tuning: its modules grafted onto the fine-tuned X-Mod) and through the
  shared models as they are. Its files are in OUT[/seed{N}]/retrieval/ (settings.json, eval/, runs/).

Layout of ``--out``: settings.json (the settings the directory was made with), tokenizer/, data/ (synthetic corpora),
runs/k{k}-{xmod|shared}/ (one pretrain run each), runs/add-*/ and runs/k{k}+{lang}-xmod/ (addition), results.json,
report.md, curse_mean.png, curse_per_language.png. Re-running the same command skips runs that wrote results.json
and resumes interrupted ones from their checkpoint (the trainer does that).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data as data_mod
from .. import report
from .. import tokenizer as tok_mod
from ..config import XmodConfig
from ..model import XmodForMaskedLM, module_language
from ..settings import setting
from ..synthetic import DEFAULT_N_LANGUAGES, N_FAMILIES, SyntheticWorld
from ..trainer import dist_info, find_checkpoint
from . import add_language, pretrain
from . import retrieval_experiment as rx

MODELS = ("xmod", "shared")
MODEL_NAMES = {"xmod": "X-Mod", "shared": "shared"}
# Settings that only pick which runs happen or how they are logged; changing them keeps finished runs valid.
_FREE_SETTINGS = ("out_dir", "device", "log_every", "save_every", "addition", "joint", "seeds")
# Settings of the retrieval scoring: they change no pre-training run, so OUT/settings.json leaves them out and
# OUT/retrieval/settings.json holds them (its own check).
_RETRIEVAL_SETTINGS = ("retrieval", "pivot", "retrieval_finetune", "finetune_k", "related_pivots", "eval_limit",
                       "retrieval_layer", "finetune_range", "finetune_steps", "finetune_batch_size", "finetune_lr",
                       "temperature", "untrained")


@dataclass
class CurseSettings:
    languages: list[int] = setting([2, 4, 8, 16], "numbers of pre-training languages k: one X-Mod and one shared "
                                                  "run for each")
    data: str = setting("", "directory of per-language corpora <code>.txt[.gz] (e.g. NTREX); languages are taken in "
                            "sorted order")
    synthetic: bool = setting(False, "use the built-in synthetic languages syn00, syn01, ... (written to OUT/data)")
    out_dir: str = setting("runs/curse", "output directory: runs/, results.json, report.md, plots", flags=("--out",))
    heldout: str = setting("", "language kept out of pre-training and added afterwards (default: with --data the "
                               "last sorted code, with --synthetic the first later language related to a "
                               "pre-training one)")
    init_from: str = setting("", "pre-training language whose modules initialise the added one (default: synthetic: "
                                 "the held-out language's closest relative; --data: the first language)")
    steps_per_language: int = setting(200, "expected updates per language: a run on k languages trains k times this",
                                      low=1)
    preset: str = setting("tiny", "architecture: tiny | small | base | large-prenorm")
    hidden_size: int | None = setting(None, "override the preset's hidden size", low=1)
    num_hidden_layers: int | None = setting(None, "override the preset's number of layers", low=1)
    adapter_reduction_factor: int | None = setting(None, "override the module bottleneck: hidden / this", low=1)
    vocab_size: int = setting(8000, "vocabulary of the one tokenizer trained for all runs", low=16)
    seq_len: int = setting(128, "tokens per packed row", low=4)
    batch_size: int = setting(16, "rows per batch", low=1)
    alpha: float = setting(0.0, "language sampling exponent, p_l ~ n_l^alpha; 0: uniform, so every language gets "
                                "the same expected number of updates", low=0)
    lr: float = setting(5e-4, "peak learning rate of pre-training", above=0)
    warmup_ratio: float = setting(0.06, "warm-up as a fraction of each run's steps", low=0, high=1)
    valid_lines: int = setting(200, "last lines of every corpus held out for validation perplexity", low=1)
    valid_batches: int = setting(4, "validation batches per language", low=1)
    addition: bool = setting(True, "add the held-out language to the largest X-Mod model afterwards")
    add_steps: int = setting(0, "updates for the added language's modules (0: --steps-per-language)", low=0)
    add_lr: float = setting(1e-3, "peak learning rate when adding the language (only its modules train)", above=0)
    joint: bool = setting(True, "reference for the addition: also pre-train X-Mod with the held-out language from "
                                "the start (one more run of (k+1) * steps-per-language steps)")
    synthetic_sentences: int = setting(10000, "sentences per synthetic language", low=1)
    synthetic_seed: int = setting(0, "seed of the synthetic world (its languages)", low=0)
    seed: int = setting(0, "seed of every run (initialisation, batches, masking)", low=0)
    precision: str = setting("auto", "fp32 | bf16 | auto")
    device: str = setting("auto", "auto | cpu | cuda")
    log_every: int = setting(10, "training metrics every N steps", low=1)
    save_every: int = setting(200, "checkpoint every N steps (interrupted runs resume from the last one)", low=0)
    seeds: list[int] = setting([], "run the whole experiment once per seed, in OUT/seed{N}/ (each as with --seed N), "
                                    "and report mean ± standard deviation over the seeds in OUT", low=0)
    # Retrieval on the same runs (recipes/retrieval_experiment.py scores them)
    retrieval: bool = setting(False, "also score cross-lingual retrieval (id- or line-aligned corpora): every run's "
                                     "languages against --pivot, before and after contrastive fine-tuning")
    pivot: str = setting("", "retrieval pivot (default: the first language of the order, which every k includes)")
    retrieval_finetune: list[str] = setting([], "languages whose pairs with the pivot train the contrastive "
                                                "fine-tuning (default: the 2nd-4th languages of the order); the "
                                                "others are zero-shot")
    finetune_k: list[int] = setting([], "k whose runs are fine-tuned for retrieval (default: the largest)", low=1)
    related_pivots: list[str] = setting([], "extra pivots, each scored against its own family's pre-training "
                                            "languages (family from languages.tsv beside the corpora), e.g. "
                                            "cak_Latn for the Mayan ones")
    eval_limit: int = setting(1000, "retrieval: the first N aligned pairs of each language (N candidates)", low=2)
    retrieval_layer: int | None = setting(None, "retrieval: layer of the pooled states (default: the middle one)",
                                          low=-257, high=256)
    finetune_range: str = setting("2000:", "retrieval fine-tuning pairs START:END of each language's pairs with the "
                                           "pivot (checked to share no verse with the evaluated ones)")
    finetune_steps: int = setting(400, "contrastive fine-tuning updates", low=1)
    finetune_batch_size: int = setting(32, "pairs per fine-tuning batch (the in-batch negatives)", low=2)
    finetune_lr: float = setting(3e-4, "contrastive fine-tuning peak learning rate", above=0)
    temperature: float = setting(0.05, "contrastive loss temperature", above=0)
    untrained: bool = setting(True, "retrieval: also score an untrained X-Mod of the largest shape per seed")


@dataclass
class Plan:
    """Which languages, in which order, from which files."""

    data_dir: Path
    corpora: dict[str, Path]  # every language the experiment reads
    order: list[str]  # pre-training languages in id order; a run on k languages uses order[:k]
    counts: list[int]  # the k values, ascending
    heldout: str
    init_from: str
    init_reason: str
    info: dict[str, dict] = dataclasses.field(default_factory=dict)  # per-language notes (synthetic: family, script)


# ---------------------------------------------------------------------------------------------------------------
# Planning


def _check(s: CurseSettings) -> list[int]:
    if dist_info()[1] > 1:
        raise ValueError("run the experiment in one process (not under torchrun): it runs many small trainings in turn")
    if bool(s.data) == s.synthetic:
        raise ValueError("give exactly one of --data DIR (per-language corpora) and --synthetic")
    counts = sorted(set(s.languages))
    if not counts or counts[0] < 1:
        raise ValueError(f"--languages {','.join(map(str, s.languages))}: expected positive numbers of languages, "
                         "e.g. 2,4,8,16")
    for name in ("steps_per_language", "seq_len", "batch_size", "valid_lines", "valid_batches", "vocab_size"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(s, name)}: must be >= 1")
    if s.add_steps < 0:
        raise ValueError(f"--add-steps {s.add_steps}: must be >= 0 (0: --steps-per-language)")
    return counts


def plan_data(s: CurseSettings, counts: list[int]) -> Plan:
    """Languages of a corpus directory: sorted codes; the held-out one defaults to the last."""
    corpora = data_mod.discover_corpora(s.data)
    codes = list(corpora)
    heldout = s.heldout or codes[-1]
    if heldout not in corpora:
        raise ValueError(f"--heldout {heldout}: no corpus for it in {s.data}; languages there: {codes}")
    order = [c for c in codes if c != heldout]
    if counts[-1] > len(order):
        raise ValueError(f"--languages asks for {counts[-1]} pre-training languages, but {s.data} has "
                         f"{len(order)} besides the held-out {heldout}: {order}")
    init_from, reason = s.init_from, "chosen with --init-from"
    if not init_from:
        init_from, reason = order[0], "the first pre-training language (no relation known for --data; --init-from)"
    if init_from not in order[:counts[-1]]:
        raise ValueError(f"--init-from {init_from}: not among the {counts[-1]} pre-training languages "
                         f"{order[:counts[-1]]}")
    corpora = {c: corpora[c] for c in order[:counts[-1]] + [heldout]}
    return Plan(Path(s.data), corpora, order, counts, heldout, init_from, reason)


def plan_synthetic(s: CurseSettings, counts: list[int], data_dir: Path) -> Plan:
    """syn00, syn01, ... in order; the held-out language is a later one from a pre-training language's family,
    by default one written in the same script as that relative (a daughter may have switched script, and then most of
    its subword pieces never occur in pre-training: its addition would test the frozen embeddings, not the modules).
    Corpora are written by write_synthetic."""
    k_max = counts[-1]
    world = _world(s, k_max)
    codes = world.languages
    order = codes[:k_max]
    script = lambda code: world.describe(code)["script"]  # noqa: E731

    def relatives(code: str) -> list[str]:
        return [c for c in world.related(code) if c in order]

    if s.heldout:
        if s.heldout not in codes[k_max:]:
            raise ValueError(f"--heldout {s.heldout}: expected a synthetic language after the {k_max} pre-training "
                             f"ones, i.e. one of {codes[k_max]} .. {codes[-1]}")
        heldout = s.heldout
    else:
        # syn00..syn15 found one family each, so a relative of a pre-training language comes later.
        candidates = [c for c in codes[max(k_max, N_FAMILIES):] if relatives(c)]
        if not candidates:
            raise ValueError(f"no synthetic language in {codes[k_max]} .. {codes[-1]} is related to {order}; "
                             "choose one with --heldout")
        heldout = next((c for c in candidates if script(c) == script(relatives(c)[0])), candidates[0])
    if s.init_from:
        if s.init_from not in order:
            raise ValueError(f"--init-from {s.init_from}: not among the pre-training languages {order}")
        init_from, reason = s.init_from, "chosen with --init-from"
    elif relatives(heldout):
        init_from = relatives(heldout)[0]
        reason = (f"its closest relative among the pre-training languages (same family, "
                  f"{world.similarity(heldout, init_from):.0%} shared vocabulary; scripts {script(heldout)} and "
                  f"{script(init_from)})")
    else:
        init_from, reason = order[0], "the first pre-training language (no relative among them)"
    needed = order + [heldout]
    keep = ("family", "script", "word_order", "morphology")
    info = {c: {k: world.describe(c)[k] for k in keep} for c in needed}
    return Plan(data_dir, {c: data_dir / f"{c}.txt" for c in needed}, order, counts, heldout, init_from, reason, info)


def _world(s: CurseSettings, k_max: int) -> SyntheticWorld:
    # Enough later languages that every pre-training family has relatives to hold out.
    return SyntheticWorld(s.synthetic_seed, n_languages=max(DEFAULT_N_LANGUAGES, k_max + 2 * N_FAMILIES))


def write_synthetic(s: CurseSettings, plan: Plan) -> None:
    """The plan's corpora, unless written before (each file is written atomically, so one that exists is complete)."""
    missing = [c for c, path in plan.corpora.items() if not path.is_file()]
    if missing:
        print(f"writing {s.synthetic_sentences} sentences for {len(missing)} synthetic languages -> {plan.data_dir}",
              flush=True)
        _world(s, plan.counts[-1]).write_corpora(plan.data_dir, missing, n_sentences=s.synthetic_sentences, seed=0)


def _check_plan(out: Path, plan: Plan) -> None:
    """The languages must be those the directory's tokenizer and runs were made for (a default may change)."""
    path = out / "plan.json"
    mine = {"order": plan.order[:plan.counts[-1]], "heldout": plan.heldout, "init_from": plan.init_from}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != mine:
            raise ValueError(f"{out} was made for languages {saved}, these settings give {mine}; use another --out "
                             "or pass --heldout/--init-from to match")
        return
    report.write_json(path, mine)


def _check_out_dir(out: Path, s: CurseSettings) -> None:
    """An output directory belongs to one set of settings: finished runs are reused, so they must match."""
    mine = {k: v for k, v in dataclasses.asdict(s).items() if k not in _FREE_SETTINGS + _RETRIEVAL_SETTINGS}
    _check_saved(out, out / "settings.json", mine)


def _check_saved(out: Path, path: Path, mine: dict) -> None:
    if path.exists():
        saved = json.loads(path.read_text())
        diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diff:
            details = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
            raise ValueError(f"{out} holds an experiment with other settings ({details}); its finished runs would "
                             "not match. Use another --out, or the same settings to resume it")
        return
    report.write_json(path, mine)


def _tokenizer(s: CurseSettings, plan: Plan, out: Path) -> Path:
    path = out / "tokenizer"
    if not (path / "tokenizer.json").is_file():
        print(f"training one {s.vocab_size}-piece tokenizer on {len(plan.corpora)} languages -> {path}", flush=True)
        tok = tok_mod.train_tokenizer(plan.corpora, vocab_size=s.vocab_size, alpha=s.alpha, seed=s.seed,
                                      skip_lines=s.valid_lines)
        tok_mod.save_tokenizer(tok, path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Runs


def _common(s: CurseSettings) -> dict[str, Any]:
    """Settings every run shares (pre-training and addition)."""
    return dict(seq_len=s.seq_len, batch_size=s.batch_size, valid_lines=s.valid_lines, valid_batches=s.valid_batches,
                warmup_ratio=s.warmup_ratio, save_every=s.save_every, seed=s.seed, precision=s.precision,
                device=s.device, log_every=s.log_every, eval_every=0, tensorboard=False)


def _execute(run_dir: Path, label: str, train) -> tuple[dict, bool]:
    """Run `train()` unless run_dir has results.json; returns (results.json, whether it ran now)."""
    done = run_dir / "results.json"
    if done.is_file():
        print(f"{label}: done before, skipped ({run_dir})", flush=True)
        return json.loads(done.read_text()), False
    resuming = find_checkpoint(run_dir) is not None
    print(f"{label}: {'resuming' if resuming else 'starting'} -> {run_dir}", flush=True)
    start = time.perf_counter()
    train()
    # Wall time of the invocation that finished the run (data loading, training, evaluation, saving).
    report.write_json(run_dir / "wall.json", {"wall_s": time.perf_counter() - start, "resumed": resuming})
    return json.loads(done.read_text()), True


def _wall(run_dir: Path) -> float | None:
    path = run_dir / "wall.json"
    return json.loads(path.read_text())["wall_s"] if path.is_file() else None


def _final_loss(run_dir: Path) -> float | None:
    """Training loss of the last logged window (metrics.jsonl; a resumed finished run logs no new loss)."""
    path = run_dir / "metrics.jsonl"
    loss = None
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            loss = json.loads(line).get("loss", loss)
        except ValueError:
            pass
    return loss


def _train_seconds(run_dir: Path) -> float | None:
    """The trainer's own clock, summed over every invocation that trained this run (resumes included)."""
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None:
        return None
    return json.loads((checkpoint / "trainer_state.json").read_text()).get("elapsed")


def parameter_counts(run_dir: Path) -> dict[str, int]:
    """total; language_modules (all of them); module (one language's, over all layers); per_language (what one
    language's forward pass uses: everything but the other languages' modules)."""
    config = XmodConfig.from_pretrained(run_dir)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = XmodForMaskedLM(config)
    seen, total, modules = set(), 0, {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        code = module_language(name)
        if code is not None:
            modules[code] = modules.get(code, 0) + p.numel()
    all_modules = sum(modules.values())
    one = max(modules.values()) if modules else 0
    return {"total": total, "language_modules": all_modules, "module": one, "per_language": total - all_modules + one}


def _data_state(run_dir: Path) -> dict | None:
    """The training data's position at the end of the run (MLMBatches.state_dict(), from the final checkpoint)."""
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None or not (checkpoint / "rank0.pt").is_file():
        return None
    state = torch.load(checkpoint / "rank0.pt", map_location="cpu", weights_only=True).get("data")
    return state if state and "streams" in state else None


class UpdateCounter:
    """Updates each language received in a finished run, measured from where its token stream stopped.

    A language's stream is its training lines in order, each followed by </s>; every update of that language takes
    batch_size * (seq_len - 2) tokens of it. The final data state says how far each stream got (epochs, line, tokens
    of that line), so the tokens consumed, and with them the updates, follow from the lines' token counts. The counts
    must add up to the run's steps; otherwise the result is None (a data format this code does not understand).
    """

    def __init__(self, tokenizer: Path, corpora: dict[str, Path]):
        self.tok = tok_mod.load_tokenizer(tokenizer)
        self.eos = self.tok.token_to_id("</s>")
        self.corpora = corpora
        self._lengths: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def _line_lengths(self, code: str, n_lines: int) -> tuple[np.ndarray, np.ndarray]:
        """(line indexes, tokens per line with </s>) of the usable training lines; cached, as every run reuses them."""
        key = (code, n_lines)
        if key not in self._lengths:
            rows = list(data_mod.read_lines(self.corpora[code], 0, n_lines, report=data_mod.CorpusReport(max_logged=0)))
            lengths = data_mod.encode_lines(self.tok, [text for _, _, text in rows], self.eos)[1]
            self._lengths[key] = (np.array([i for i, _, _ in rows], dtype=np.int64), lengths)
        return self._lengths[key]

    def __call__(self, run_dir: Path, steps: int) -> dict[str, dict[str, int]] | None:
        state = _data_state(run_dir)
        if state is None:
            return None
        per_update = state["batch_size"] * (state["seq_len"] - 2)
        n_lines = dict(zip(state["languages"], state["line_counts"]))
        updates, lines = {}, {}
        for code, pos in state["streams"].items():
            index, lengths = self._line_lengths(code, n_lines[code])
            tokens = int(pos["epoch"]) * int(lengths.sum()) + int(lengths[index < pos["line"]].sum()) + int(pos["skip"])
            if tokens % per_update:
                return None
            updates[code] = tokens // per_update
            lines[code] = int(pos["epoch"]) * n_lines[code] + int(pos["line"])
        if sum(updates.values()) != steps:
            return None
        return {"updates": updates, "lines": lines}


def unseen_piece_share(counter: UpdateCounter, order: list[str], heldout: str, valid_lines: int) -> float:
    """Share of the held-out language's validation tokens whose piece never occurs in the pre-training languages'
    training text: their embeddings stay untrained, and adding the language post hoc keeps them frozen."""
    seen: set[int] = set()
    for code in order:
        n = data_mod.count_lines(counter.corpora[code]) - valid_lines
        texts = [text for _, _, text in data_mod.read_lines(counter.corpora[code], 0, n,
                                                            report=data_mod.CorpusReport(max_logged=0))]
        seen.update(np.unique(data_mod.encode_lines(counter.tok, texts, counter.eos)[0]).tolist())
    path = counter.corpora[heldout]
    n = data_mod.count_lines(path)
    texts = [text for _, _, text in data_mod.read_lines(path, n - valid_lines, n,
                                                        report=data_mod.CorpusReport(max_logged=0))]
    ids, lengths = data_mod.encode_lines(counter.tok, texts, counter.eos)
    tokens = np.delete(ids, np.cumsum(lengths) - 1)  # the </s> after every line is no piece of the language
    return float(np.mean(~np.isin(tokens, list(seen)))) if tokens.size else 0.0


def _ppl(results: dict, languages: list[str]) -> dict[str, float]:
    return {code: results[f"eval/ppl/{code}"] for code in languages}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def pretrain_entry(s: CurseSettings, plan: Plan, tokenizer: Path, run_dir: Path, languages: list[str],
                   shared: bool, label: str, count_updates: UpdateCounter) -> dict:
    steps = s.steps_per_language * len(languages)
    settings = pretrain.PretrainSettings(
        data=str(plan.data_dir), languages=languages, out_dir=str(run_dir),
        preset=s.preset, hidden_size=s.hidden_size, num_hidden_layers=s.num_hidden_layers,
        adapter_reduction_factor=s.adapter_reduction_factor, tokenizer=str(tokenizer), alpha=s.alpha,
        shared=shared, max_steps=steps, lr=s.lr, **_common(s))
    results, _ = _execute(run_dir, label, lambda: pretrain.run(settings))
    ppl = _ppl(results, languages)
    counted = count_updates(run_dir, steps) or {}
    return {"dir": f"runs/{run_dir.name}", "languages": languages, "steps": steps, "ppl": ppl,
            "mean_ppl": _mean(ppl.values()), "parameters": parameter_counts(run_dir),
            "updates": counted.get("updates"), "lines_read": counted.get("lines"), "wall_s": _wall(run_dir),
            "train_s": _train_seconds(run_dir), "final_loss": _final_loss(run_dir)}


def addition_entry(s: CurseSettings, plan: Plan, base: Path, run_dir: Path, init_from: list[str],
                   label: str) -> dict:
    steps = s.add_steps or s.steps_per_language
    settings = add_language.AddLanguageSettings(
        model=str(base), lang=plan.heldout, data=str(plan.corpora[plan.heldout]), out_dir=str(run_dir),
        init_from=list(init_from), max_steps=steps, lr=s.add_lr, **_common(s),
        extend_vocab=0, train_unseen_rows=False)  # the paper's addition: only the new modules train
    results, _ = _execute(run_dir, label, lambda: add_language.run(settings))
    init = (init_from[0] if len(init_from) == 1 else f"average of {len(init_from)} languages") if init_from else None
    return {"dir": f"runs/{run_dir.name}", "init_from": init, "steps": steps,
            "ppl": results[f"eval/ppl/{plan.heldout}"], "trainable_parameters": results.get("trainable_parameters"),
            "wall_s": _wall(run_dir), "train_s": _train_seconds(run_dir)}


# ---------------------------------------------------------------------------------------------------------------
# The experiment


def run(s: CurseSettings) -> dict:
    """The experiment for --seed, or for each of --seeds and then their mean and spread."""
    return run_seeds(s) if s.seeds else run_one(s)


def run_one(s: CurseSettings) -> dict:
    counts = _check(s)
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_out_dir(out, s)
    started = time.perf_counter()
    plan = plan_synthetic(s, counts, out / "data") if s.synthetic else plan_data(s, counts)
    _check_plan(out, plan)
    if s.synthetic:
        write_synthetic(s, plan)
    tokenizer = _tokenizer(s, plan, out)
    count_updates = UpdateCounter(tokenizer, plan.corpora)
    k_max = counts[-1]
    jobs = [(k, m) for k in counts for m in MODELS]
    n_runs = len(jobs) + (3 if s.addition else 0) + (1 if s.joint else 0)
    print(f"curse experiment: k = {counts}, {s.steps_per_language} steps per language, {n_runs} runs -> {out}",
          flush=True)

    results: dict[str, Any] = {
        "settings": dataclasses.asdict(s), "data": s.data or "data", "order": plan.order[:k_max],
        "common_languages": plan.order[:counts[0]], "heldout": plan.heldout, "init_from": plan.init_from,
        "init_from_reason": plan.init_reason, "language_info": plan.info, "tokenizer": tokenizer.name,
        "protocol": ("a run on k languages trains k * steps_per_language updates, one language per batch, languages "
                     f"drawn with p ~ n^{s.alpha:g}, so each language expects steps_per_language updates; X-Mod and "
                     "shared share seed, schedule, batches, tokenizer and validation lines"),
        "runs": {},
    }
    for i, (k, model) in enumerate(jobs, 1):
        entry = pretrain_entry(s, plan, tokenizer, out / "runs" / f"k{k}-{model}", plan.order[:k], model == "shared",
                               f"[{i}/{n_runs}] k={k} {MODEL_NAMES[model]}", count_updates)
        results["runs"].setdefault(str(k), {})[model] = entry
    for k, entries in results["runs"].items():
        for entry in entries.values():
            entry["mean_ppl_common"] = _mean(entry["ppl"][c] for c in results["common_languages"])

    done = len(jobs)
    if s.addition or s.joint:
        base = out / "runs" / f"k{k_max}-xmod"
        addition: dict[str, Any] = {
            "language": plan.heldout, "base_model": f"runs/{base.name}", "k": k_max, "runs": {},
            "unseen_pieces": unseen_piece_share(count_updates, plan.order[:k_max], plan.heldout, s.valid_lines)}
        if s.addition:
            # Random, a copy of one (related) language, and the average of every pre-training language's modules.
            inits = {"random": [], f"from-{plan.init_from}": [plan.init_from], "average": plan.order[:k_max]}
            for name, init in inits.items():
                done += 1
                addition["runs"][name] = addition_entry(
                    s, plan, base, out / "runs" / f"add-{plan.heldout}-{name}", init,
                    f"[{done}/{n_runs}] add {plan.heldout} to k={k_max} X-Mod, init {name}")
        if s.joint:
            done += 1
            joint = pretrain_entry(s, plan, tokenizer, out / "runs" / f"k{k_max}+{plan.heldout}-xmod",
                                   plan.order[:k_max] + [plan.heldout], False,
                                   f"[{done}/{n_runs}] X-Mod pre-trained on the {k_max} languages + {plan.heldout}",
                                   count_updates)
            joint["mean_ppl_pretraining_languages"] = _mean(joint["ppl"][c] for c in plan.order[:k_max])
            addition["joint"] = joint
        else:
            addition["joint"] = None
        results["addition"] = addition

    if s.retrieval:
        results["retrieval"] = _retrieval(s, plan, out, results)
    results["wall_s_this_invocation"] = time.perf_counter() - started
    report.publish(out, results, render_report(results), plot)
    return results


def _retrieval_plan(s: CurseSettings, plan: Plan) -> tuple[rx.RetrievalExperimentSettings, dict[str, str],
                                                           dict[str, list[str]]]:
    """(the retrieval settings over the largest k's languages, {code: family}, {extra pivot: its relatives}), all
    checked before any work."""
    counts = sorted(set(s.languages))
    order = plan.order[:counts[-1]]
    pivot = s.pivot or order[0]
    if pivot not in plan.order[:counts[0]]:
        raise ValueError(f"--pivot {pivot}: every k must include it, i.e. one of the first {counts[0]} languages "
                         f"{plan.order[:counts[0]]}")
    finetune = s.retrieval_finetune or [c for c in order[1:4] if c != pivot]
    outside = [c for c in finetune if c not in order or c == pivot]
    if outside:
        raise ValueError(f"--retrieval-finetune {outside}: expected pre-training languages other than the pivot "
                         f"{pivot}: {order}")
    finetune_k = s.finetune_k or [counts[-1]]
    if set(finetune_k) - set(counts):
        raise ValueError(f"--finetune-k {finetune_k}: expected some of --languages {counts}")
    families = rx.read_families(plan.data_dir) or {c: info["family"] for c, info in plan.info.items()}
    related = {}
    for extra in s.related_pivots:
        if extra not in order or extra not in families:
            raise ValueError(f"--related-pivots {extra}: expected a pre-training language with a family in "
                             f"languages.tsv (languages: {order})")
        related[extra] = [c for c in order if c != extra and families.get(c) == families[extra]]
    rs = rx.RetrievalExperimentSettings(
        data=str(plan.data_dir), languages=order, pivot=pivot, finetune=finetune, seeds=[s.seed],
        preset=s.preset, eval_limit=s.eval_limit, layer=s.retrieval_layer, finetune_range=s.finetune_range,
        finetune_steps=s.finetune_steps, finetune_batch_size=s.finetune_batch_size, finetune_lr=s.finetune_lr,
        temperature=s.temperature, untrained=s.untrained, device=s.device)
    return rs, families, related


def _retrieval(s: CurseSettings, plan: Plan, out: Path, results: dict) -> dict:
    """Retrieval figures of this seed's runs (recipes/retrieval_experiment.py), with their group summaries."""
    rs, families, related = _retrieval_plan(s, plan)
    counts = sorted(set(s.languages))
    root = out / "retrieval"
    _check_saved(root, root / "settings.json", {k: getattr(s, k) for k in _RETRIEVAL_SETTINGS})
    addition = results.get("addition") or {}
    runs = rx.CurseRuns(
        pretrained={k: {m: out / "runs" / f"k{k}-{m}" for m in MODELS} for k in counts},
        finetune_k=s.finetune_k or [counts[-1]], related=related,
        heldout=plan.heldout if addition.get("runs") else None,
        added={name: out / e["dir"] for name, e in addition.get("runs", {}).items()})
    print(f"retrieval against {rs.pivot}: {len(counts) * 2} runs, fine-tuning on {', '.join(rs.finetune)} at "
          f"k = {runs.finetune_k} -> {root}", flush=True)
    figures = rx.score_curse_runs(rs, s.seed, runs, root)
    figures["eval_limit"] = s.eval_limit
    figures["families"] = {c: families.get(c) for c in [*rs.languages, plan.heldout]}
    figures["summary"] = rx.summarise(figures, rs.languages, families)
    return figures


# ---------------------------------------------------------------------------------------------------------------
# Report


def _ppl_table(results: dict, model: str) -> str:
    counts = sorted(int(k) for k in results["runs"])
    header = ["language"] + [f"k={k}" for k in counts]
    rows = [[code] + [results["runs"][str(k)][model]["ppl"].get(code) for k in counts] for code in results["order"]]
    rows.append(["mean (all k languages)"] + [results["runs"][str(k)][model]["mean_ppl"] for k in counts])
    rows.append([f"mean ({', '.join(results['common_languages'])})"]
                + [results["runs"][str(k)][model]["mean_ppl_common"] for k in counts])
    return report.markdown_table(header, rows)


def _wins(results: dict) -> str:
    parts = []
    for k, entries in sorted(results["runs"].items(), key=lambda kv: int(kv[0])):
        x, b = entries["xmod"]["ppl"], entries["shared"]["ppl"]
        wins = sum(x[c] < b[c] for c in x)
        rel = _mean((b[c] - x[c]) / b[c] for c in x) or 0.0
        parts.append(f"k={k}: {wins}/{len(x)} languages, mean {rel:+.1%}")
    return "X-Mod lower perplexity than shared (relative gain = (shared - X-Mod) / shared): " + "; ".join(parts)


def _runs_table(results: dict) -> str:
    header = ["k", "model", "steps", "parameters", "per language", "updates / language", "mean ppl",
              "train s", "wall s"]
    rows = []
    for k, entries in sorted(results["runs"].items(), key=lambda kv: int(kv[0])):
        for model in MODELS:
            e = entries[model]
            updates = e["updates"]
            spread = f"{min(updates.values()):,}-{max(updates.values()):,}" if updates else None
            rows.append([int(k), MODEL_NAMES[model], e["steps"], e["parameters"]["total"],
                         e["parameters"]["per_language"], spread, e["mean_ppl"], e["train_s"], e["wall_s"]])
    return report.markdown_table(header, rows, digits=1, align="rlrrrrrrr")


def _addition_table(results: dict) -> str:
    a = results["addition"]
    code, k = a["language"], a["k"]
    own = results["runs"][str(k)]["xmod"]
    header = ["model", f"ppl {code}", f"mean ppl of the {k} pre-training languages", "trained parameters",
              f"updates on {code}", "wall s"]
    rows = []
    for name, e in a["runs"].items():
        init = f"init from {e['init_from']}" if e["init_from"] else "random init"
        # Only the new modules train, so the other languages keep the k-language model's outputs exactly.
        rows.append([f"k={k} X-Mod + {code} added ({init})", e["ppl"], own["mean_ppl"], e["trainable_parameters"],
                     e["steps"], e["wall_s"]])
    if a.get("joint"):
        j = a["joint"]
        updates = (j["updates"] or {}).get(code, f"~{results['settings']['steps_per_language']}")
        rows.append([f"X-Mod pre-trained on {k} + {code} from the start", j["ppl"][code],
                     j["mean_ppl_pretraining_languages"], j["parameters"]["total"], updates, j["wall_s"]])
    return report.markdown_table(header, rows, digits=2)


def render_report(results: dict) -> str:
    s = results["settings"]
    source = f"`{s['data']}`" if s["data"] else f"synthetic languages (world seed {s['synthetic_seed']}, " \
                                                   f"{s['synthetic_sentences']} sentences each)"
    shape = s["preset"] + "".join(f", {k}={s[k]}" for k in ("hidden_size", "num_hidden_layers",
                                                             "adapter_reduction_factor") if s[k] is not None)
    lines = [
        "# Curse of multilinguality: X-Mod vs the shared baseline", "",
        f"Data: {source}. Model: {shape}; seq_len {s['seq_len']}, batch {s['batch_size']}, lr {s['lr']:g}, "
        f"seed {s['seed']}, tokenizer of {s['vocab_size']} pieces shared by every run.",
        f"Protocol: {results['protocol']} ({s['steps_per_language']} steps per language).",
        f"Score: masked-LM perplexity on the last {s['valid_lines']} lines of each language "
        f"(at most {s['valid_batches']} batches), at the end of training; lower is better.", "",
        "## Validation perplexity, X-Mod", "", _ppl_table(results, "xmod"), "",
        "## Validation perplexity, shared baseline", "", _ppl_table(results, "shared"), "",
        _wins(results), "",
        "## Runs", "",
        "`per language`: parameters one language's forward pass uses (the same for both models); "
        "`updates / language`: measured updates per language, min-max over languages (the draw is random; "
        "each expects steps / k).", "",
        _runs_table(results), "",
    ]
    a = results.get("addition")
    if a:
        lines += [f"## Adding {a['language']} after pre-training (k={a['k']} X-Mod model)", "",
                  f"Initialisation source: {results['init_from']}, {results['init_from_reason']}. "
                  f"{a['unseen_pieces']:.1%} of {a['language']}'s validation tokens are pieces that never occur in "
                  f"the {a['k']} pre-training languages' training text: the k={a['k']} model never trained their "
                  "embeddings, and the addition keeps every embedding frozen.", ""]
        if a["runs"] or a.get("joint"):
            lines += [_addition_table(results), ""]
        if not a.get("joint"):
            lines += ["Joint pre-training reference skipped (--no-joint).", ""]
        if not a["runs"]:
            lines += ["Post-hoc addition skipped (--no-addition).", ""]
    if results.get("retrieval"):
        r = results["retrieval"]
        lines.append(rx.render_curse_retrieval(report.over_seeds([r]), results["order"], r["families"], 1))
    lines.append(f"Wall time of this invocation: {results['wall_s_this_invocation']:.0f} s "
                 "(runs finished by an earlier invocation are skipped and not counted).")
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> list[Path]:
    counts = sorted(int(k) for k in results["runs"])
    runs = results["runs"]
    common = ", ".join(results["common_languages"])
    mean_series, styles = {}, {}
    for m, color in zip(MODELS, ("tab:blue", "tab:orange")):
        dash = "-" if m == "xmod" else "--"
        mean_series[f"{MODEL_NAMES[m]}, all k languages"] = [runs[str(k)][m]["mean_ppl"] for k in counts]
        styles[f"{MODEL_NAMES[m]}, all k languages"] = {"color": color, "linestyle": dash}
        mean_series[f"{MODEL_NAMES[m]}, {common}"] = [runs[str(k)][m]["mean_ppl_common"] for k in counts]
        styles[f"{MODEL_NAMES[m]}, {common}"] = {"color": color, "linestyle": dash, "marker": "s", "alpha": 0.5}
    paths = [report.line_plot(
        out / "curse_mean.png", counts, mean_series, title="Mean validation perplexity (solid X-Mod, dashed shared)",
        xlabel="pre-training languages k", ylabel="perplexity (lower is better)", log2_x=True, styles=styles)]
    series, line_styles = {}, {}
    for i, code in enumerate(results["common_languages"]):
        color = f"C{i % 10}"
        for m in MODELS:
            label = f"{code} {MODEL_NAMES[m]}"
            series[label] = [runs[str(k)][m]["ppl"][code] for k in counts]
            line_styles[label] = {"color": color, "linestyle": "-" if m == "xmod" else "--"}
    paths.append(report.line_plot(
        out / "curse_per_language.png", counts, series,
        title="Per-language validation perplexity (solid X-Mod, dashed shared)", xlabel="pre-training languages k",
        ylabel="perplexity (lower is better)", log2_x=True, styles=line_styles,
        legend_columns=2 if len(series) > 8 else 1))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Several seeds: each a whole experiment in OUT/seed{N}/, then the mean and spread over them


def run_seeds(s: CurseSettings) -> dict:
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_out_dir(out, s)
    started = time.perf_counter()
    per_seed = []
    for seed in s.seeds:
        print(f"=== seed {seed} -> {out / f'seed{seed}'}", flush=True)
        _share_tokenizer(out / f"seed{s.seeds[0]}", out / f"seed{seed}")
        per_seed.append(run_one(dataclasses.replace(s, seeds=[], seed=seed, out_dir=str(out / f"seed{seed}"))))
    first = per_seed[0]
    results = {
        "settings": dataclasses.asdict(s), "seeds": list(s.seeds), "order": first["order"],
        "common_languages": first["common_languages"], "heldout": first["heldout"], "init_from": first["init_from"],
        "protocol": first["protocol"], "per_seed": [f"seed{seed}/results.json" for seed in s.seeds],
        "families": (first.get("retrieval") or {}).get("families")
        or {c: (first["language_info"].get(c) or {}).get("family") for c in first["order"]},
        "curse": curse_over_seeds(per_seed),
        "addition": report.over_seeds([_addition_figures(r) for r in per_seed]),
        "retrieval": report.over_seeds([r.get("retrieval") for r in per_seed]),
        "wall_s": report.over_seeds([_seed_wall(r) for r in per_seed]),
        "wall_s_this_invocation": time.perf_counter() - started,
    }
    report.publish(out, results, render_seeds(results), plot_seeds)
    return results


def _share_tokenizer(first: Path, this: Path) -> None:
    """Every seed uses the first seed's tokenizer (copied before the seed's first run; training it on dozens of
    languages takes minutes, and one vocabulary keeps perplexities comparable across seeds). Copied to a temporary
    directory and renamed, so a tokenizer directory that exists is complete."""
    source, target = first / "tokenizer", this / "tokenizer"
    if first == this or target.exists() or not (source / "tokenizer.json").is_file():
        return
    tmp = target.with_name("tokenizer.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    os.replace(tmp, target)


def curse_over_seeds(per_seed: list[dict]) -> dict:
    """k -> {"xmod" | "shared": {"ppl": {lang}, "mean_ppl", "mean_ppl_common"}, "gain": {"per_language": {lang},
    "mean", "wins"}}, each number a report.mean_sd over seeds; gain = (shared - X-Mod) / shared perplexity."""
    trimmed = []
    for r in per_seed:
        one = {}
        for k, entries in r["runs"].items():
            x, b = entries["xmod"]["ppl"], entries["shared"]["ppl"]
            gain = {c: (b[c] - x[c]) / b[c] for c in x}
            one[k] = {m: {key: e[key] for key in ("ppl", "mean_ppl", "mean_ppl_common")} for m, e in entries.items()}
            one[k]["gain"] = {"per_language": gain, "mean": _mean(gain.values()), "wins": sum(x[c] < b[c] for c in x)}
        trimmed.append(one)
    return report.over_seeds(trimmed)


def _addition_figures(r: dict) -> dict | None:
    a = r.get("addition")
    if not a or not a.get("runs"):
        return None
    return {"language": a["language"], "k": a["k"], "unseen_pieces": a["unseen_pieces"],
            "ppl": {name: e["ppl"] for name, e in a["runs"].items()}}


def _seed_wall(r: dict) -> float:
    """Wall seconds of one seed's pre-training and addition runs (as measured by the invocations that ran them)."""
    walls = [e["wall_s"] for entries in r["runs"].values() for e in entries.values()]
    walls += [e["wall_s"] for e in (r.get("addition") or {}).get("runs", {}).values()]
    return sum(w for w in walls if w is not None)


def _gain_cell(stat: dict | None) -> str:
    return report.format_mean_sd(stat, digits=1, percent=True)


def render_seeds(results: dict) -> str:
    s, curse = results["settings"], results["curse"]
    counts = sorted(int(k) for k in curse)
    n = len(results["seeds"])
    families = results.get("families") or {}
    shape = s["preset"] + "".join(f", {k}={s[k]}" for k in ("hidden_size", "num_hidden_layers",
                                                             "adapter_reduction_factor") if s[k] is not None)
    lines = [
        f"# Curse of multilinguality and retrieval: X-Mod vs the shared baseline, {n} seeds", "",
        f"Data: `{s['data'] or 'synthetic'}`. Model: {shape}; seq_len {s['seq_len']}, batch {s['batch_size']}, lr "
        f"{s['lr']:g}, seeds {', '.join(map(str, results['seeds']))}; one tokenizer of {s['vocab_size']} pieces "
        "(trained by the first seed) shared by every run.",
        f"Protocol: {results['protocol']} ({s['steps_per_language']} steps per language).",
        "Every figure is the mean ± sample standard deviation over the seeds (each seed: its own initialisation, "
        "batches and masks). Perplexity: masked LM on the last "
        f"{s['valid_lines']} lines of each language (at most {s['valid_batches']} batches), lower is better.", "",
        "## Curse of multilinguality", "",
        "Relative gain = (shared − X-Mod) / shared perplexity, per language, then averaged over the k languages; "
        "wins: languages where X-Mod's perplexity is lower.", "",
    ]
    header = ["k", "X-Mod mean ppl", "shared mean ppl", "X-Mod gain", "X-Mod wins",
              f"X-Mod ppl ({', '.join(results['common_languages'])})",
              f"shared ppl ({', '.join(results['common_languages'])})"]
    rows = [[k, report.format_mean_sd(curse[str(k)]["xmod"]["mean_ppl"], 1),
             report.format_mean_sd(curse[str(k)]["shared"]["mean_ppl"], 1),
             _gain_cell(curse[str(k)]["gain"]["mean"]),
             f"{report.format_mean_sd(curse[str(k)]['gain']['wins'], 1)} of {k}",
             report.format_mean_sd(curse[str(k)]["xmod"]["mean_ppl_common"], 1),
             report.format_mean_sd(curse[str(k)]["shared"]["mean_ppl_common"], 1)] for k in counts]
    lines += [report.markdown_table(header, rows), "", "### Relative gain of X-Mod per language", ""]
    header = ["language", "family", *[f"k={k}" for k in counts]]
    rows = [[code, families.get(code) or "?",
             *[_gain_cell(curse[str(k)]["gain"]["per_language"].get(code)) for k in counts]]
            for code in results["order"]]
    lines += [report.markdown_table(header, rows, align="ll" + "r" * len(counts)), ""]
    for model, title in (("xmod", "X-Mod"), ("shared", "shared baseline")):
        header = ["language", *[f"k={k}" for k in counts]]
        rows = [[code, *[report.format_mean_sd(curse[str(k)][model]["ppl"].get(code), 1) for k in counts]]
                for code in results["order"]]
        lines += [f"### Perplexity, {title}", "", report.markdown_table(header, rows), ""]
    a = results.get("addition")
    if a:
        lines += [f"### {a['language']} added post hoc to the k={a['k']['mean']:g} X-Mod model (perplexity)", "",
                  report.markdown_table(["initialisation", f"ppl {a['language']}"],
                                        [[name, report.format_mean_sd(v, 1)] for name, v in a["ppl"].items()]),
                  "", f"{a['unseen_pieces']['mean']:.1%} of its validation tokens are pieces the pre-training "
                      "languages' training text never has (untrained, frozen embeddings).", ""]
    if results.get("retrieval"):
        lines.append(rx.render_curse_retrieval(results["retrieval"], results["order"], families, n))
    lines.append(f"Wall time of the pre-training and addition runs per seed: "
                 f"{report.format_mean_sd(results['wall_s'], 0)} s; of this invocation: "
                 f"{results['wall_s_this_invocation']:.0f} s (work done by earlier invocations is skipped).")
    return "\n".join(lines) + "\n"


def plot_seeds(results: dict, out: Path) -> list[Path]:
    curse = results["curse"]
    counts = sorted(int(k) for k in curse)
    series = {f"{MODEL_NAMES[m]}, mean over the k languages": [curse[str(k)][m]["mean_ppl"]["mean"] for k in counts]
              for m in MODELS}
    paths = [report.line_plot(
        out / "curse_mean.png", counts, series, log2_x=True, xlabel="pre-training languages k",
        ylabel="perplexity (lower is better)",
        title=f"Mean validation perplexity, mean of {len(results['seeds'])} seeds")]
    retrieval = results.get("retrieval")
    if retrieval:
        groups = retrieval["summary"]["groups"]
        series = {f"{rx.NAMES.get(m, m)}": [((((groups.get(str(k)) or {}).get(m) or {}).get("before") or {})
                                             .get("all") or {}).get("acc@1", {}).get("mean") for k in counts]
                  for m in (*MODELS, rx.UNTRAINED)}
        paths.append(report.line_plot(
            out / "retrieval_by_k.png", counts, series, log2_x=True, xlabel="pre-training languages k",
            ylabel="accuracy@1 in % (chance 0.1)",
            title="Retrieval against the pivot before fine-tuning, mean over languages"))
    return paths
