"""The demo: X-Mod end to end on built-in synthetic languages, on a CPU, with nothing to download.

What it shows, in one command (5-9 minutes on 2 CPU cores with one thread, depending on the machine's other
work: 5 min 31 s beside one other job, 8 min 12 s on a busy machine; ``--quick``: seconds):
pre-training with per-language modules against the shared baseline (one module for every language) on the same
data and schedule; adding a language afterwards without changing any old language's outputs (checked bit for bit);
fine-tuning on one language with embeddings and modules frozen, then zero-shot transfer to the others.

Stages, each in its own directory under ``--out``, skipped when it finished before (its results.json, or task.json
for fine-tuning, exists); an interrupted training stage resumes from its checkpoint (the trainer does that):
  data/               corpora of the pre-training languages (the first synthetic ones: one family and script each)
                      and of one held-out language, the source language's closest relative; task train/test files
                      (NER by default) for every language, with the same items and labels in each
                      (synthetic.SyntheticWorld, world seed 0)
  tokenizer/          one unigram vocabulary for all languages, the held-out one included (as XLM-R's vocabulary
                      covers the languages the paper adds later); validation lines left out
  pretrain-xmod/      masked-LM pre-training of X-Mod (per-language modules from the start)
  pretrain-shared/    the shared baseline: same tokenizer, batches, schedule and seed; one module for all
  add-<code>/         the held-out language added to X-Mod, its modules copied from its closest relative; only
                      they train
  checks/             every old language's MLM logits before and after the addition (bit-identical or not), the
                      held-out language's perplexity without its own module, untrained perplexities
  finetune-xmod/      the task on the source language through its module, embeddings and modules frozen (X-Mod
  finetune-shared/    with the added language; the shared baseline)
  eval-xmod/          zero-shot scores on every language's test set through its own module; the shared model has
  eval-shared/        one module, which serves every language, the held-out one included
Then results.json, report.md and the plots (perplexity.png, zero_shot.png, training_loss.png,
validation_perplexity.png), written afresh on every run from the stages' files. settings.json records what the
directory was made with (a rerun with other settings is refused: its finished stages would not match);
timings.json the wall time of each stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .. import data as data_mod
from .. import report
from .. import tokenizer as tok_mod
from ..config import XmodConfig
from ..model import XmodForMaskedLM
from ..runtime import machine_info, set_threads
from ..settings import setting
from ..synthetic import N_FAMILIES, SyntheticWorld
from ..trainer import find_checkpoint
from . import add_language, evaluate, finetune, pretrain

MODELS = {"xmod": "X-Mod", "shared": "shared"}


@dataclass(frozen=True)
class Task:
    name: str  # in xmodlm.tasks
    title: str
    metric: str  # the evaluate recipe's key for the score shown
    metric_name: str
    suffix: str  # file extension of the task's data format
    unit: str  # what one example is
    chance: float | None  # score of guessing, where it is meaningful


# NER is the default: at this size, fine-tuning with embeddings and modules frozen learns it in a few hundred steps,
# NLI hardly (measured with the FULL settings: NLI accuracy on the source language 38% X-Mod, 47% shared, chance
# elsewhere; after only 600 pre-training steps, 300 NLI steps at lr 1e-3, 3e-3 or 1e-2 kept the loss at ln 3, while
# training everything, embeddings included, reached 71%).
TASKS = {"ner": Task("ner", "NER", "f1", "entity F1", ".txt", "sentences", None),
         "nli": Task("nli", "NLI", "accuracy", "accuracy", ".tsv", "pairs", 100 / 3)}
# Settings that do not change what the stages compute; a finished demo can be rerun with other values.
_FREE_SETTINGS = ("out_dir", "device", "threads")


@dataclass
class DemoSettings:
    out_dir: str = setting("runs/demo", "output directory: one folder per stage, results.json, report.md, plots",
                           flags=("--out",))
    quick: bool = setting(False, "tiny everything (well under a minute; the numbers mean nothing): a smoke test")
    languages: int | None = setting(None, "pre-training languages, the first N synthetic ones, each of its own "
                                          "family and script (unset: 6; --quick: 3)", low=2)
    task: str = setting("ner", "fine-tuning task: ner (entity F1) | nli (accuracy; barely above chance at this size)")
    source_lang: str = setting("", "language of the fine-tuning data (empty: the first pre-training language)")
    steps: int | None = setting(None, "pre-training updates of each model (unset: 3000; --quick: 12)", low=1)
    add_steps: int | None = setting(None, "updates of the added language's modules (unset: 500; --quick: 6)", low=1)
    finetune_steps: int | None = setting(None, "fine-tuning updates of each model (unset: 600; --quick: 6)", low=1)
    seed: int = setting(0, "seed of every training run and of the validation masking", low=0)
    device: str = setting("auto", "auto | cpu | cuda")
    threads: int = setting(0, "CPU threads of torch's operators during the demo (0: one per core left idle by the "
                              "machine's other work, from the load average; printed at start): its models are so "
                              "small that a second thread gains little, while on a busy machine threads waiting for "
                              "each other made steps 4-60 times slower (measured, 2 cores)")


@dataclass(frozen=True)
class Scale:
    """Sizes and optimisation of every stage, chosen for the time budget (see FULL)."""

    languages: int
    sentences: int  # per language; the last valid_lines are held out for validation
    task_train: int  # fine-tuning examples (source language)
    task_test: int  # test examples per language
    vocab_size: int
    hidden_size: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    add_steps: int
    add_lr: float
    finetune_steps: int
    finetune_lr: float
    finetune_batch: int
    max_length: int
    valid_lines: int
    valid_batches: int
    eval_every: int
    log_every: int


# Measured on 2 CPU cores, one torch thread: a pre-training step (tiny preset at width 64, 32 x 64 tokens) takes
# ~35 ms, so the two 3000-step runs are most of the demo's ~4 minutes. With 2400 steps both models reached a mean
# validation perplexity near 85 (from ~2000 untrained) and ~67 NER F1 on the source language. Wider (128) or deeper
# (4 layers) models at this learning rate left the shared baseline unstable (perplexity > 400 after 1200 steps).
FULL = Scale(languages=6, sentences=8000, task_train=2000, task_test=500, vocab_size=2000, hidden_size=64,
             seq_len=64, batch_size=32, steps=3000, lr=3e-3, add_steps=500, add_lr=3e-3, finetune_steps=600,
             finetune_lr=3e-3, finetune_batch=32, max_length=64, valid_lines=300, valid_batches=4, eval_every=500,
             log_every=10)
QUICK = Scale(languages=3, sentences=300, task_train=96, task_test=48, vocab_size=300, hidden_size=32, seq_len=32,
              batch_size=8, steps=12, lr=2e-3, add_steps=6, add_lr=3e-3, finetune_steps=6, finetune_lr=1e-3,
              finetune_batch=16, max_length=48, valid_lines=40, valid_batches=1, eval_every=6, log_every=2)


@dataclass(frozen=True)
class Plan:
    scale: Scale
    task: Task
    order: list[str]  # pre-training languages, in id order
    heldout: str
    init_from: str  # the held-out language's closest relative among the pre-training languages
    source: str
    info: dict[str, dict]  # code -> family, script, word order, morphology

    @property
    def codes(self) -> list[str]:
        return [*self.order, self.heldout]


def make_scale(s: DemoSettings) -> Scale:
    base = QUICK if s.quick else FULL
    overrides = {name: getattr(s, name) for name in ("languages", "steps", "add_steps", "finetune_steps")
                 if getattr(s, name) is not None}
    for name, value in overrides.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be >= 1")
    if not 2 <= overrides.get("languages", base.languages) <= N_FAMILIES:
        raise ValueError(f"--languages {s.languages}: expected 2 to {N_FAMILIES} (one per synthetic family)")
    scale = dataclasses.replace(base, **overrides)
    if "steps" in overrides:  # keep about five validation points on the curve
        scale = dataclasses.replace(scale, eval_every=max(1, scale.steps // 6))
    return scale


def choose_heldout(world: SyntheticWorld, order: list[str], source: str) -> tuple[str, str]:
    """(held-out language, its relative among the pre-training languages whose modules initialise it).

    The source language's closest relative outside pre-training, so that the added language's zero-shot score
    shows transfer within a family; when the source has none, the closest relative of any pre-training language.
    (The first N_FAMILIES synthetic languages found one family each, so relatives come later.)
    """
    def later(code: str) -> list[str]:
        return [c for c in world.related(code) if c not in order]

    if later(source):
        return later(source)[0], source
    candidates = [(world.similarity(c, o), c, o) for o in order for c in later(o)]
    if not candidates:
        raise ValueError(f"no synthetic language outside {order} is related to one of them")
    _, heldout, init_from = max(candidates)
    return heldout, init_from


def make_plan(s: DemoSettings, world: SyntheticWorld) -> Plan:
    if s.task not in TASKS:
        raise ValueError(f"--task {s.task!r}: expected one of {', '.join(TASKS)}")
    scale = make_scale(s)
    order = world.languages[:scale.languages]
    source = s.source_lang or order[0]
    if source not in order:
        raise ValueError(f"--source-lang {source!r}: expected one of the pre-training languages {order}")
    heldout, init_from = choose_heldout(world, order, source)
    keep = ("family", "script", "word_order", "morphology")
    info = {c: {k: world.describe(c)[k] for k in keep} for c in [*order, heldout]}
    info[heldout]["similarity_to_init_from"] = world.similarity(heldout, init_from)
    return Plan(scale, TASKS[s.task], order, heldout, init_from, source, info)


# ---------------------------------------------------------------------------------------------------------------
# Stages


class Stages:
    """Runs stages in order with a one-line header each (elapsed time); skips finished ones; records their time."""

    def __init__(self, out: Path, total: int):
        self.out, self.total, self.done = out, total, 0
        self.started = time.perf_counter()
        self.timings_path = out / "timings.json"
        self.timings: dict[str, float] = (json.loads(self.timings_path.read_text())
                                          if self.timings_path.is_file() else {})
        self.ran: list[str] = []

    def elapsed(self) -> str:
        seconds = int(time.perf_counter() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def projection(self) -> str:
        """The whole demo's expected wall time once X-Mod has pre-trained: in the README's runs the stages after it
        took 1.03 times as long as it (163 s against 158 s)."""
        seconds = int(time.perf_counter() - self.started + 1.03 * self.timings["pretrain-xmod"])
        return f"{seconds // 60} min {seconds % 60:02d} s"

    def run(self, name: str, title: str, marker: Path, work: Callable[[], Any]) -> None:
        self.done += 1
        header = f"[{self.done}/{self.total}] {title}"
        if marker.is_file():
            print(f"{header}: done before, skipped ({marker.parent}) [elapsed {self.elapsed()}]", flush=True)
            return
        resuming = find_checkpoint(marker.parent) is not None
        print(f"{header}: {'resuming' if resuming else 'starting'} -> {marker.parent} [elapsed {self.elapsed()}]",
              flush=True)
        start = time.perf_counter()
        work()
        # A resumed stage records the time of the invocation that finished it.
        self.timings[name] = time.perf_counter() - start
        self.ran.append(name)
        report.write_json(self.timings_path, self.timings)


def task_file(plan: Plan, data_dir: Path, code: str, split: str) -> Path:
    return data_dir / plan.task.name / f"{code}.{split}{plan.task.suffix}"


def write_data(world: SyntheticWorld, plan: Plan, data_dir: Path) -> None:
    scale, write = plan.scale, getattr(world, f"write_{plan.task.name}")
    world.write_corpora(data_dir, plan.codes, n_sentences=scale.sentences, seed=0)
    for code in plan.codes:  # the same items (and labels) in every language; train and test are other draws
        write(task_file(plan, data_dir, code, "train"), code, scale.task_train, seed=1)
        write(task_file(plan, data_dir, code, "test"), code, scale.task_test, seed=2)
    report.write_json(data_dir / "results.json", {
        "world_seed": world.seed, "languages": plan.info, "sentences": scale.sentences, "task": plan.task.name,
        "task_train": scale.task_train, "task_test": scale.task_test})


def corpora(plan: Plan, data_dir: Path) -> dict[str, Path]:
    return {code: data_dir / f"{code}.txt" for code in plan.codes}


def train_tokenizer(plan: Plan, data_dir: Path, out: Path, seed: int) -> None:
    tok = tok_mod.train_tokenizer(corpora(plan, data_dir), vocab_size=plan.scale.vocab_size, alpha=0.3, seed=seed,
                                  skip_lines=plan.scale.valid_lines)
    tok_mod.save_tokenizer(tok, out)
    # Written last: tokenizer.json alone may be half-written by a kill, this file says the stage finished.
    report.write_json(out / "results.json", {"vocab_size": tok.get_vocab_size(), "languages": plan.codes,
                                             "held_out_lines": plan.scale.valid_lines})


def training_common(s: DemoSettings, scale: Scale) -> dict[str, Any]:
    return dict(seq_len=scale.seq_len, batch_size=scale.batch_size, valid_lines=scale.valid_lines,
                valid_batches=scale.valid_batches, seed=s.seed, device=s.device, log_every=scale.log_every,
                tensorboard=False, warmup_ratio=0.06)


def pretrain_settings(s: DemoSettings, plan: Plan, data_dir: Path, tokenizer: Path, out: Path,
                      shared: bool) -> pretrain.PretrainSettings:
    scale = plan.scale
    return pretrain.PretrainSettings(
        data=str(data_dir), languages=plan.order, out_dir=str(out), preset="tiny", hidden_size=scale.hidden_size,
        tokenizer=str(tokenizer), shared=shared, max_steps=scale.steps, lr=scale.lr, eval_every=scale.eval_every,
        save_every=max(scale.steps // 3, 1), **training_common(s, scale))


def add_settings(s: DemoSettings, plan: Plan, data_dir: Path, base: Path,
                 out: Path) -> add_language.AddLanguageSettings:
    scale = plan.scale
    return add_language.AddLanguageSettings(
        model=str(base), lang=plan.heldout, data=str(data_dir / f"{plan.heldout}.txt"), out_dir=str(out),
        init_from=[plan.init_from], max_steps=scale.add_steps, lr=scale.add_lr,
        save_every=max(scale.add_steps // 2, 1), **training_common(s, scale),
        extend_vocab=0, train_unseen_rows=False)  # the paper's addition: only the new modules train


def finetune_settings(s: DemoSettings, plan: Plan, data_dir: Path, model: Path, out: Path) -> finetune.FinetuneSettings:
    scale = plan.scale
    return finetune.FinetuneSettings(
        model=str(model), task=plan.task.name, train=str(task_file(plan, data_dir, plan.source, "train")),
        source_lang=plan.source, out_dir=str(out), max_length=scale.max_length, batch_size=scale.finetune_batch,
        max_steps=scale.finetune_steps, lr=scale.finetune_lr, warmup_ratio=0.1,
        save_every=max(scale.finetune_steps // 2, 1), log_every=scale.log_every, seed=s.seed, device=s.device,
        tensorboard=False)


def evaluate_settings(s: DemoSettings, plan: Plan, data_dir: Path, model: Path, out: Path) -> evaluate.EvaluateSettings:
    # The shared model has no code for the held-out language: the fallback routes it through the one shared module
    # (any code would); X-Mod has its own module for every language.
    return evaluate.EvaluateSettings(
        model=str(model), task=plan.task.name, out_dir=str(out), batch_size=64, device=s.device, fallback=plan.source,
        data=[f"{code}={task_file(plan, data_dir, code, 'test')}" for code in plan.codes])


# ---------------------------------------------------------------------------------------------------------------
# Checks: the addition leaves old languages bit-identical; perplexities the training runs do not report


@torch.no_grad()
def masked_lm_pass(model: XmodForMaskedLM, batches: list[dict], lang_id: int) -> tuple[float, list[torch.Tensor]]:
    """(perplexity over the masked tokens, logits of every batch), every row routed through module ``lang_id``."""
    model.eval()
    total, count, logits = 0.0, 0, []
    for batch in batches:
        batch = {**batch, "lang_ids": torch.full_like(batch["lang_ids"], lang_id)}
        out = model(**batch)
        n = int(batch["labels"].ne(-100).sum())
        total += float(out.loss) * n
        count += n
        logits.append(out.logits)
    return math.exp(total / max(count, 1)), logits


def run_checks(s: DemoSettings, plan: Plan, out: Path) -> None:
    scale = plan.scale
    tok = tok_mod.load_tokenizer(out / "tokenizer")
    valid = data_mod.validation_batches(corpora(plan, out / "data"), tok, plan.codes, seq_len=scale.seq_len,
                                        batch_size=scale.batch_size, valid_lines=scale.valid_lines,
                                        max_batches=scale.valid_batches, seed=s.seed)  # the pre-training runs' own
    base = XmodForMaskedLM.from_pretrained(out / "pretrain-xmod")
    added = XmodForMaskedLM.from_pretrained(out / f"add-{plan.heldout}")
    shared = XmodForMaskedLM.from_pretrained(out / "pretrain-shared")
    unchanged = {}
    for code in plan.order:
        before, logits_before = masked_lm_pass(base, valid[code], base.config.languages.index(code))
        after, logits_after = masked_lm_pass(added, valid[code], added.config.languages.index(code))
        diff = max(float((a - b).abs().max()) for a, b in zip(logits_before, logits_after))
        unchanged[code] = {"ppl_before": before, "ppl_after": after, "max_abs_logit_diff": diff,
                           "bit_identical": all(torch.equal(a, b) for a, b in zip(logits_before, logits_after))}
    h = plan.heldout
    heldout = {
        "xmod_added": masked_lm_pass(added, valid[h], added.config.languages.index(h))[0],
        # Before the addition: the relative's modules, which the new ones start as a copy of.
        "xmod_init_from_module": masked_lm_pass(base, valid[h], base.config.languages.index(plan.init_from))[0],
        "shared": masked_lm_pass(shared, valid[h], 0)[0],  # every id of the shared model is the one module
    }
    untrained = {}
    for model in MODELS:
        config = XmodConfig.from_pretrained(out / f"pretrain-{model}")
        torch.manual_seed(s.seed)  # the initialisation the pre-training run started from
        fresh = XmodForMaskedLM(config)
        untrained[model] = {c: masked_lm_pass(fresh, valid[c], i)[0] for i, c in enumerate(plan.order)}
    report.write_json(out / "checks" / "results.json", {
        "old_languages_after_addition": unchanged,
        "all_bit_identical": all(v["bit_identical"] for v in unchanged.values()),
        "heldout": h, "heldout_ppl": heldout, "untrained_ppl": untrained})


# ---------------------------------------------------------------------------------------------------------------
# The demo


def expected_duration(scale: Scale) -> str | None:
    """What to expect at the default scale (measured, README); None at any other, where no figure was measured."""
    if scale != FULL:
        return None
    return ("expect 5-9 minutes on 2 CPU cores with one thread (5 min 31 s beside one other job, 8 min 12 s on a "
            "busy machine); a projection for this machine follows the first pre-training stage")


def _check_out_dir(out: Path, s: DemoSettings, plan: Plan) -> None:
    """Finished stages are reused, so a directory belongs to one set of settings."""
    mine = {"settings": {k: v for k, v in dataclasses.asdict(s).items() if k not in _FREE_SETTINGS},
            "scale": dataclasses.asdict(plan.scale)}
    path = out / "settings.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != mine:
            diff = {k: (saved["settings"].get(k), v) for k, v in mine["settings"].items()
                    if saved["settings"].get(k) != v}
            details = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items())) or "sizes"
            raise ValueError(f"{out} holds a demo run with other settings ({details}); its finished stages would not "
                             "match. Use another --out, or the same settings to resume it")
        return
    report.write_json(path, mine)


def run(s: DemoSettings) -> dict:
    before = torch.get_num_threads()
    set_threads(s.threads)
    try:
        return _run(s)
    finally:
        torch.set_num_threads(before)  # the process (e.g. a test session) gets its setting back


def _run(s: DemoSettings) -> dict:
    world = SyntheticWorld(0)
    plan = make_plan(s, world)
    scale, task = plan.scale, plan.task
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_out_dir(out, s, plan)
    data_dir, tokenizer = out / "data", out / "tokenizer"
    h = plan.heldout
    print(f"X-Mod demo -> {out}\n  pre-training languages: "
          + ", ".join(f"{c} ({plan.info[c]['script']})" for c in plan.order)
          + f"\n  held out, added after pre-training: {h} ({plan.info[h]['script']}, same family as {plan.init_from})"
          f"\n  {task.title} fine-tuning on {plan.source}, zero-shot on the others", flush=True)
    if expected_duration(plan.scale):
        print(f"  {expected_duration(plan.scale)}", flush=True)

    stages = Stages(out, total=10)
    stages.run("data", f"synthetic corpora ({scale.sentences} sentences) and {task.title} files for "
               f"{len(plan.codes)} languages", data_dir / "results.json", lambda: write_data(world, plan, data_dir))
    stages.run("tokenizer", f"tokenizer ({scale.vocab_size} pieces, all {len(plan.codes)} languages)",
               tokenizer / "results.json", lambda: train_tokenizer(plan, data_dir, tokenizer, s.seed))
    for model in MODELS:
        run_dir = out / f"pretrain-{model}"
        settings = pretrain_settings(s, plan, data_dir, tokenizer, run_dir, shared=model == "shared")
        stages.run(f"pretrain-{model}", f"pre-train {MODELS[model]} on {len(plan.order)} languages "
                   f"({scale.steps} steps)", run_dir / "results.json", lambda settings=settings: pretrain.run(settings))
        if model == "xmod" and "pretrain-xmod" in stages.ran and scale == FULL:
            print(f"  projected total: about {stages.projection()} (the stages after this one took about as long "
                  "as it, together, in the runs the README reports)", flush=True)
    add_dir = out / f"add-{h}"
    stages.run("add", f"add {h} to X-Mod (modules from {plan.init_from}; {scale.add_steps} steps, only they train)",
               add_dir / "results.json",
               lambda: add_language.run(add_settings(s, plan, data_dir, out / "pretrain-xmod", add_dir)))
    stages.run("checks", "old languages' outputs before/after the addition; held-out perplexities",
               out / "checks" / "results.json", lambda: run_checks(s, plan, out))
    bases = {"xmod": add_dir, "shared": out / "pretrain-shared"}
    for model in MODELS:
        run_dir = out / f"finetune-{model}"
        settings = finetune_settings(s, plan, data_dir, bases[model], run_dir)
        stages.run(f"finetune-{model}", f"fine-tune {MODELS[model]} on {plan.source} {task.title} "
                   f"({scale.finetune_steps} steps, embeddings and modules frozen)", run_dir / evaluate.TASK_FILE,
                   lambda settings=settings: finetune.run(settings))
    for model in MODELS:
        run_dir = out / f"eval-{model}"
        settings = evaluate_settings(s, plan, data_dir, out / f"finetune-{model}", run_dir)
        stages.run(f"eval-{model}", f"zero-shot {task.title} of {MODELS[model]} on {len(plan.codes)} languages",
                   run_dir / "results.json", lambda settings=settings: evaluate.run(settings))

    results = collect(s, plan, out, stages)
    report.write_json(out / "results.json", results)
    plots(results, out)
    report.write_text(out / "report.md", render_report(results))
    print(f"\n{summary(results)}\nreport -> {out / 'report.md'} [elapsed {stages.elapsed()}]", flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------------
# Results


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _curves(run_dir: Path) -> dict[str, dict[str, float]]:
    """metric -> {step: value} from a run's metrics.jsonl (training loss, eval/ppl/mean ...); steps as strings,
    as JSON keeps them."""
    curves: dict[str, dict[str, float]] = {}
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                curves.setdefault(k, {})[str(record["step"])] = float(v)
    return curves


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def collect(s: DemoSettings, plan: Plan, out: Path, stages: Stages) -> dict:
    """Everything the report shows, from the stages' files (so a rerun that skips every stage gives the same)."""
    h, metric = plan.heldout, plan.task.metric
    pre = {m: _read(out / f"pretrain-{m}" / "results.json") for m in MODELS}
    added = _read(out / f"add-{h}" / "results.json")
    checks = _read(out / "checks" / "results.json")
    evals = {m: _read(out / f"eval-{m}" / "results.json")["languages"] for m in MODELS}
    tuned = {m: _read(out / f"finetune-{m}" / evaluate.TASK_FILE) for m in MODELS}

    languages = {}
    for code in plan.codes:
        if code == h:
            ppl = {"xmod": checks["heldout_ppl"]["xmod_added"], "shared": checks["heldout_ppl"]["shared"],
                   "xmod_before_addition": checks["heldout_ppl"]["xmod_init_from_module"]}
            role = f"held out; added after pre-training (modules from {plan.init_from})"
        else:
            ppl = {m: pre[m][f"eval/ppl/{code}"] for m in MODELS}
            ppl["untrained"] = checks["untrained_ppl"]["xmod"][code]
            role = f"pre-training; {plan.task.title} source" if code == plan.source else "pre-training"
        languages[code] = {**plan.info[code], "role": role, "ppl": ppl,
                           "score": {m: evals[m][code][metric] for m in MODELS},
                           "module": {m: evals[m][code]["module"] for m in MODELS}}
    targets = [c for c in plan.order if c != plan.source]
    curves = {m: _curves(out / f"pretrain-{m}") for m in MODELS}
    return {
        "settings": dataclasses.asdict(s), "scale": dataclasses.asdict(plan.scale),
        "task": dataclasses.asdict(plan.task), "order": plan.order, "heldout": h, "init_from": plan.init_from,
        "source_lang": plan.source, "targets": targets, "languages": languages,
        "mean": {
            "ppl": {m: _mean(pre[m][f"eval/ppl/{c}"] for c in plan.order) for m in MODELS},
            "untrained_ppl": {m: _mean(checks["untrained_ppl"][m].values()) for m in MODELS},
            "zero_shot": {m: _mean(evals[m][c][metric] for c in targets) for m in MODELS},
        },
        "addition": {"language": h, "init_from": plan.init_from, "steps": plan.scale.add_steps,
                     "trainable_parameters": added.get("trainable_parameters"),
                     "old_languages": checks["old_languages_after_addition"],
                     "all_bit_identical": checks["all_bit_identical"]},
        "parameters": {m: pre[m]["parameters"] for m in MODELS},
        "finetune": {m: {"trainable_parameters": tuned[m]["trainable_parameters"],
                         "parameters": tuned[m]["parameters"], "steps": tuned[m]["max_steps"],
                         "train_examples": tuned[m]["train_examples"], "final_loss": tuned[m]["metrics"].get("loss")}
                     for m in MODELS},
        "curves": {m: {"loss": curves[m].get("loss", {}), "ppl_mean": curves[m].get("eval/ppl/mean", {})}
                   for m in MODELS},
        "stage_seconds": stages.timings, "stages_run_now": stages.ran, **machine_and_precision(out),
        "wall_s_all_stages": sum(stages.timings.values()),
    }


def machine_and_precision(out: Path) -> dict:
    """{"machine", "precision"} of X-Mod's pre-training (its trainer_state.json); this machine if absent."""
    checkpoint = find_checkpoint(out / "pretrain-xmod")
    state = _read(checkpoint / "trainer_state.json") if checkpoint is not None else {}
    return {"machine": state.get("machine") or machine_info(), "precision": state.get("precision", "unknown")}


def results_table(results: dict) -> str:
    task, n = results["task"], len(results["order"])
    short = "F1" if task["metric"] == "f1" else task["metric_name"]
    header = ["language", "script", "role", "ppl X-Mod", "ppl shared", f"{task['title']} {short} X-Mod",
              f"{task['title']} {short} shared"]
    rows = []
    for code, r in results["languages"].items():
        role = ("added" if code == results["heldout"] else
                "source" if code == results["source_lang"] else "zero-shot")
        rows.append([code, r["script"], role, r["ppl"]["xmod"], r["ppl"]["shared"], r["score"]["xmod"],
                     r["score"]["shared"]])
    m = results["mean"]
    rows.append([f"mean, {n} pre-training languages", "", "", m["ppl"]["xmod"], m["ppl"]["shared"], None, None])
    rows.append([f"mean zero-shot, {n - 1} pre-training languages", "", "", None, None, m["zero_shot"]["xmod"],
                 m["zero_shot"]["shared"]])
    return report.markdown_table(header, rows, digits=1, align="lllrrrr")


def verdicts(results: dict) -> list[str]:
    """Plain statements of who won what, whichever way it went."""
    order, h, langs, task = results["order"], results["heldout"], results["languages"], results["task"]
    mean, unit = results["mean"], "%" if task["metric"] == "accuracy" else ""
    wins = sum(langs[c]["ppl"]["xmod"] < langs[c]["ppl"]["shared"] for c in order)
    x, b = mean["ppl"]["xmod"], mean["ppl"]["shared"]
    lines = [f"Perplexity: X-Mod is lower than the shared baseline on {wins} of {len(order)} pre-training languages "
             f"(mean {x:.1f} vs {b:.1f}: {'X-Mod' if x < b else 'the shared model'} is better on average)."]
    targets = results["targets"]
    xz, bz = mean["zero_shot"]["xmod"], mean["zero_shot"]["shared"]
    z_wins = sum(langs[c]["score"]["xmod"] > langs[c]["score"]["shared"] for c in targets)
    # Scores this close to nothing (or to chance) say that neither model transfers, whichever is ahead.
    floor = task["chance"] + 5 if task["chance"] is not None else 10
    better = ("neither model transfers much at this size" if max(xz, bz) < floor else
              "X-Mod transfers better here" if xz > bz else
              "the shared model transfers better here" if bz > xz else "a tie")
    chance = f", chance {task['chance']:.1f}{unit}" if task["chance"] is not None else ""
    src = results["source_lang"]
    lines.append(f"Zero-shot {task['title']} ({task['metric_name']}): X-Mod scores higher on {z_wins} of "
                 f"{len(targets)} pre-training languages other than {src} (mean {xz:.1f}{unit} vs {bz:.1f}{unit}"
                 f"{chance}: {better}); on {src} itself "
                 f"{langs[src]['score']['xmod']:.1f}{unit} vs {langs[src]['score']['shared']:.1f}{unit}.")
    hp = langs[h]["ppl"]
    lines.append(f"Added language {h}: perplexity {hp['xmod']:.1f} with its own modules after "
                 f"{results['addition']['steps']} steps ({hp['xmod_before_addition']:.1f} through "
                 f"{results['init_from']}'s modules before the addition; the shared model, which cannot learn it "
                 f"without changing every other language: {hp['shared']:.1f}); zero-shot {task['title']} "
                 f"{langs[h]['score']['xmod']:.1f}{unit} (X-Mod) vs {langs[h]['score']['shared']:.1f}{unit} (shared).")
    still = still_falling(results)
    if still:
        lines.append("Still learning at the end: " + "; ".join(still) + ". Part of the perplexity gap is speed of "
                     "learning; longer training (--steps) may narrow or widen it.")
    a = results["addition"]
    identical = [c for c, v in a["old_languages"].items() if v["bit_identical"]]
    changed = sorted(set(a["old_languages"]) - set(identical))
    lines.append(f"Old languages after the addition: {len(identical)} of {len(a['old_languages'])} produce "
                 "bit-identical masked-LM logits" + (", so their perplexities are unchanged." if not changed else
                                                     f"; changed: {changed}."))
    return lines


def still_falling(results: dict, threshold: float = 0.05) -> list[str]:
    """Models whose mean validation perplexity fell by more than `threshold` between their last two evaluations."""
    notes = []
    for m in MODELS:
        curve = results["curves"][m]["ppl_mean"]
        steps = sorted(curve, key=int)
        if len(steps) >= 2:
            before, last = curve[steps[-2]], curve[steps[-1]]
            if last < (1 - threshold) * before:
                notes.append(f"{MODELS[m]}'s mean perplexity fell {1 - last / before:.0%} over its last "
                             f"{int(steps[-1]) - int(steps[-2])} steps ({before:.1f} -> {last:.1f})")
    return notes


def summary(results: dict) -> str:
    return results_table(results) + "\n\n" + "\n".join(verdicts(results))


def _addition_table(results: dict) -> str:
    rows = [[code, v["ppl_before"], v["ppl_after"], v["max_abs_logit_diff"], v["bit_identical"]]
            for code, v in results["addition"]["old_languages"].items()]
    return report.markdown_table(["language", "ppl before adding", "ppl after adding", "max abs logit difference",
                                  "bit-identical"], rows, digits=4)


def _languages_table(results: dict) -> str:
    rows = [[code, r["family"], r["script"], r["word_order"], r["morphology"], r["role"]]
            for code, r in results["languages"].items()]
    return report.markdown_table(["language", "family", "script", "word order", "morphology", "role"], rows,
                                 align="llllll")


def _timings_table(results: dict) -> str:
    rows = [[name, seconds] for name, seconds in results["stage_seconds"].items()]
    rows.append(["total", results["wall_s_all_stages"]])
    return report.markdown_table(["stage", "seconds"], rows, digits=0)


def _machine_line(results: dict) -> str:
    m = results.get("machine") or {}
    threads = m.get("threads")
    return (f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {threads} torch "
            f"thread{'s' if threads != 1 else ''}, torch {m.get('torch', '?')}"
            + (f", {m['gpu']}" if m.get("gpu") else "") + f"; training precision: {results.get('precision', '?')}.")


def render_report(results: dict) -> str:
    sc, p, task = results["scale"], results["parameters"], results["task"]
    h, init, src = results["heldout"], results["init_from"], results["source_lang"]
    langs = results["languages"]
    quick = results["settings"]["quick"]
    per_module = (p["xmod"] - p["shared"]) // max(1, len(results["order"]) - 1)  # X-Mod: one module per extra language
    ft = results["finetune"]["xmod"]
    chance = f" (chance {task['chance']:.1f}%)" if task["chance"] is not None else ""
    lines = [
        "# X-Mod demo: per-language modules vs one shared module, on synthetic languages", "",
        *(["**--quick run: tiny sizes and a handful of steps; the numbers below mean nothing.**", ""] if quick else []),
        f"Reproduce: `xmodlm demo{' --quick' if quick else ''} --out DIR` (results.json holds every number below). "
        "Everything is synthetic (`xmodlm.synthetic`, world seed 0): the languages say the same things in different "
        "words, scripts and grammars, so task labels are identical across languages.", "",
        "## Languages", "", _languages_table(results), "",
        f"Pre-training: {sc['sentences'] - sc['valid_lines']:,} sentences per language (the last "
        f"{sc['valid_lines']} held out for validation), {sc['steps']} updates of {sc['batch_size']} x "
        f"{sc['seq_len']} tokens, one language per batch, lr {sc['lr']:g}; the tiny preset at width "
        f"{sc['hidden_size']}; one tokenizer of {sc['vocab_size']:,} pieces trained on all {len(langs)} languages. "
        f"X-Mod has {p['xmod']:,} parameters (a module of {per_module:,} per language), the shared baseline "
        f"{p['shared']:,}: each language's forward pass uses the same number in both.", "",
        "## Results", "",
        f"Perplexity: masked LM on each language's validation lines (lower is better; an untrained model: "
        f"{results['mean']['untrained_ppl']['xmod']:.0f} on average). {task['title']}: fine-tuned on {src} only "
        f"({sc['task_train']:,} {task['unit']}, {ft['steps']} updates, lr {sc['finetune_lr']:g}; embeddings and "
        f"language modules frozen, {ft['trainable_parameters']:,} of {ft['parameters']:,} parameters train), then "
        f"tested on {sc['task_test']} {task['unit']} per language through that language's module: "
        f"{task['metric_name']}{chance}, higher is better. For {h}, X-Mod's perplexity is after adding it; the "
        f"shared model runs {h} through its one module, never trained on {h}.", "",
        results_table(results), "",
        *[f"- {line}" for line in verdicts(results)], "",
        "![validation perplexity per language](perplexity.png)", "",
        f"![zero-shot {task['title']} per language](zero_shot.png)", "",
        "## Adding a language after pre-training", "",
        f"{h} ({langs[h]['script']}) shares a family with {init} ({langs[init]['script']}; "
        f"{langs[h]['similarity_to_init_from']:.0%} of the vocabulary inherited from one proto-language). Its "
        f"modules start as a copy of {init}'s and train for {sc['add_steps']} updates on {h} text "
        f"({results['addition']['trainable_parameters']:,} trainable parameters, lr {sc['add_lr']:g}); nothing else "
        "trains, the embeddings included, so pieces that only the held-out language uses keep their initial vectors. "
        "The old languages' masked-LM logits on their validation batches, before and after:", "",
        _addition_table(results), "",
        "## Training curves", "",
        "![pre-training loss](training_loss.png)", "",
        "![validation perplexity during pre-training](validation_perplexity.png)", "",
        "## Reading the results", "",
        "This demonstrates the mechanics at toy scale; it is not a replication. In the paper, X-Mod's advantage over "
        "the shared model grows with the number of languages, as the shared model's fixed capacity is split among "
        "more of them (the curse of multilinguality); a few CPU minutes on a handful of languages is far from that "
        "regime, and either model can come out ahead: the statements above say which did in this run. "
        "`xmodlm experiment curse` studies the effect as the number of languages grows. Zero-shot transfer at this "
        "size comes mostly from what languages share on the surface (script, transliterated names); languages in "
        "other scripts get little. What holds at any scale is the addition: the old languages' outputs do not change "
        "at all, which a shared model cannot offer once it learns a new language.", "",
        "## Stage times (seconds)", "",
        "Wall time of the invocation that finished each stage (a skipped stage keeps its earlier time). "
        f"{_machine_line(results)}", "",
        _timings_table(results), "",
    ]
    return "\n".join(lines)


def perplexity_bars(results: dict, labels: list[str]) -> tuple[list[str], dict[str, list[float | None]]]:
    """Categories and series of perplexity.png. The shared model never trained on the added language: its bar there
    would set the axis and flatten the gaps between the models on the others, so it is left out and its value is
    written under the language, with the reason."""
    codes, langs, h = list(results["languages"]), results["languages"], results["heldout"]
    categories = [f"{c}\n(added; shared model,\nnever trained on it:\n{langs[c]['ppl']['shared']:.0f})" if c == h
                  else label for c, label in zip(codes, labels)]
    series = {MODELS[m]: [None if (m == "shared" and c == h) else langs[c]["ppl"][m] for c in codes] for m in MODELS}
    return categories, series


def plots(results: dict, out: Path) -> list[Path]:
    codes, langs, task = list(results["languages"]), results["languages"], results["task"]
    labels = [f"{c}\n(added)" if c == results["heldout"] else (f"{c}\n(source)" if c == results["source_lang"]
                                                               else c) for c in codes]
    paths = [report.bar_plot(out / "perplexity.png", *perplexity_bars(results, labels),
                             title="Validation perplexity per language (lower is better)",
                             ylabel="masked-LM perplexity")]
    paths.append(report.bar_plot(
        out / "zero_shot.png", labels, {MODELS[m]: [langs[c]["score"][m] for c in codes] for m in MODELS},
        title=f"{task['title']} {task['metric_name']}, fine-tuned on {results['source_lang']} only (higher is better)",
        ylabel=f"{task['metric_name']} (%)", reference=task["chance"], reference_label="chance"))
    curves = results["curves"]
    steps = sorted(set(curves["xmod"]["loss"]) | set(curves["shared"]["loss"]), key=int)
    no_marker = {MODELS[m]: {"marker": ""} for m in MODELS}
    paths.append(report.line_plot(
        out / "training_loss.png", [int(k) for k in steps],
        {MODELS[m]: [curves[m]["loss"].get(k) for k in steps] for m in MODELS},
        title="Pre-training loss (masked LM, mean of each logging window)", xlabel="step", ylabel="loss",
        styles=no_marker))
    evals = sorted(set(curves["xmod"]["ppl_mean"]) | set(curves["shared"]["ppl_mean"]), key=int)
    untrained = results["mean"]["untrained_ppl"]
    paths.append(report.line_plot(
        out / "validation_perplexity.png", [0] + [int(k) for k in evals],
        {MODELS[m]: [untrained[m]] + [curves[m]["ppl_mean"].get(k) for k in evals] for m in MODELS},
        title="Mean validation perplexity, pre-training languages", xlabel="step (0: untrained)",
        ylabel="perplexity (log scale)", log_y=True))
    return paths
