"""``xmodlm experiment retrieval``: X-Mod against the shared baseline on cross-lingual retrieval, before and after
contrastive fine-tuning (issue 16's measurement).

Protocol:
- For every seed in ``--seeds``, X-Mod and the shared baseline are pre-trained on ``--languages`` of ``--data`` (a
  directory of ``<code>.txt`` files, with ``<code>.ids`` for id-aligned data such as ../shared/data/bible) with the
  same seed, schedule and batches; one tokenizer, trained by the first X-Mod run, serves every run.
- Retrieval (recipes/retrieval.py): every language but the pivot (``--pivot``) against the pivot, on the first
  ``--eval-limit`` aligned pairs (1,000: chance@1 = 0.1%), at ``--layer`` (default the middle one), by cosine.
- Contrastive fine-tuning on the ``--finetune`` languages' pairs with the pivot (pairs ``--finetune-range`` of each,
  checked to share no sentence with the evaluated pairs), then the same evaluation: the other languages are
  zero-shot.
- results.json holds every figure; report.md the mean ± standard deviation over seeds of acc@1 (mean of both
  directions) per language and model, before and after fine-tuning, and the mean over the zero-shot languages.

Layout of ``--out``: runs/{xmod|shared}-s{seed}/ (pre-training), runs/{...}-ft/ (fine-tuning),
eval/{...}-{before|after}/ (results.json of each evaluation), results.json, report.md. Rerunning the same command
skips what is done (a pre-training or fine-tuning directory with its final files, an evaluation with its
results.json) and resumes the rest from their checkpoints. Changing settings between reruns is not checked: use a
new --out for other settings.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import report
from .. import tokenizer as tok_mod
from ..config import XmodConfig
from ..model import XmodForMaskedLM
from ..settings import setting
from . import evaluate as ev
from . import finetune as ft
from . import pretrain
from . import retrieval as rt

MODELS = ("xmod", "shared")
NAMES = {"xmod": "X-Mod", "shared": "shared"}


@dataclass
class RetrievalExperimentSettings:
    data: str = setting("", "directory of <code>.txt (+ <code>.ids) files, e.g. ../shared/data/bible", required=True)
    languages: list[str] = setting([], "pre-training languages (the pivot and the fine-tuning ones among them)",
                                   required=True)
    pivot: str = setting("", "the language every other one is retrieved against", required=True)
    finetune: list[str] = setting([], "languages whose pairs with the pivot train the contrastive fine-tuning "
                                      "(the others are evaluated zero-shot)", required=True)
    out_dir: str = setting("runs/retrieval-experiment", "output directory", flags=("--out",))
    seeds: list[int] = setting([0, 1, 2], "one pre-training and fine-tuning per seed and model")
    preset: str = setting("tiny", "architecture: tiny | small | base | large-prenorm")
    hidden_size: int | None = setting(128, "override the preset's hidden size", low=1)
    num_hidden_layers: int | None = setting(4, "override the preset's number of layers", low=1)
    vocab_size: int = setting(4000, "vocabulary of the tokenizer trained by the first run", low=16)
    seq_len: int = setting(64, "pre-training tokens per packed row", low=4)
    batch_size: int = setting(16, "pre-training rows per batch", low=1)
    max_steps: int = setting(2500, "pre-training updates", low=1)
    lr: float = setting(1e-3, "pre-training peak learning rate", above=0)
    valid_lines: int = setting(200, "last lines of every language held out of pre-training (its perplexity)",
                              low=1)
    eval_limit: int = setting(1000, "evaluated pairs per language (the first ones, after alignment)", low=2)
    layer: int | None = setting(None, "layer of the embeddings (default: the middle one)", low=-257, high=256)
    finetune_range: str = setting("2000:", "fine-tuning pairs START:END of each language's pairs with the pivot")
    finetune_steps: int = setting(400, "contrastive fine-tuning updates", low=1)
    finetune_batch_size: int = setting(32, "pairs per fine-tuning batch (the in-batch negatives)", low=2)
    finetune_lr: float = setting(3e-4, "fine-tuning peak learning rate", above=0)
    temperature: float = setting(0.05, "contrastive loss temperature", above=0)
    untrained: bool = setting(True, "also score an untrained X-Mod of the same shape per seed (the surface-token "
                                    "baseline: mean pooling of random states still matches shared names and numbers)")
    device: str = setting("auto", "auto | cpu | cuda")

    def __post_init__(self):
        if self.pivot and self.languages and self.pivot not in self.languages:
            raise ValueError(f"--pivot {self.pivot!r} is not one of --languages {self.languages}")
        missing = [lang for lang in self.finetune if lang not in self.languages or lang == self.pivot]
        if missing:
            raise ValueError(f"--finetune {missing}: fine-tuning languages must be --languages other than the pivot")
        if not self.seeds:
            raise ValueError("--seeds must name at least one seed")


def _file(s: RetrievalExperimentSettings, lang: str) -> str:
    return str(Path(s.data) / f"{lang}.txt")


def _check_disjoint(s: RetrievalExperimentSettings) -> None:
    """No fine-tuning pair may share its verse (or line) with an evaluated pair of any language."""
    files = {lang: Path(_file(s, lang)) for lang in s.languages}
    evaluated = rt.load_pairs(files, s.pivot, None, s.eval_limit, "eval")
    trained = rt.load_pairs({lang: files[lang] for lang in [*s.finetune, s.pivot]}, s.pivot, s.finetune_range, None,
                            "finetune")
    seen = {key for p in evaluated.values() for key in p.keys}
    shared = sorted(seen & {key for p in trained.values() for key in p.keys})
    if shared:
        raise ValueError(f"--finetune-range {s.finetune_range} shares {len(shared)} pairs with the evaluated ones "
                         f"(e.g. {shared[:3]}); start it after them")


def _pretrain(s: RetrievalExperimentSettings, model: str, seed: int, run_dir: Path, tokenizer: Path | None) -> None:
    if (run_dir / "results.json").is_file():
        return
    pretrain.run(pretrain.PretrainSettings(
        data=s.data, languages=list(s.languages), out_dir=str(run_dir), preset=s.preset, hidden_size=s.hidden_size,
        num_hidden_layers=s.num_hidden_layers, tokenizer=str(tokenizer) if tokenizer else None,
        vocab_size=s.vocab_size, valid_lines=s.valid_lines, seq_len=s.seq_len, batch_size=s.batch_size,
        max_steps=s.max_steps, lr=s.lr, shared=model == "shared", seed=seed, device=s.device, tensorboard=False,
        save_every=500))


def _finetune(s: RetrievalExperimentSettings, base: Path, seed: int, run_dir: Path, layer: int | None) -> None:
    if (run_dir / "task.json").is_file():
        return
    ft.run(ft.FinetuneSettings(
        model=str(base), task="retrieval", train=[f"{lang}={_file(s, lang)}" for lang in [*s.finetune, s.pivot]],
        pivot=s.pivot, train_range=s.finetune_range, max_steps=s.finetune_steps, batch_size=s.finetune_batch_size,
        lr=s.finetune_lr, warmup_ratio=0.1, layer=layer, temperature=s.temperature, seed=seed, out_dir=str(run_dir),
        device=s.device, tensorboard=False, save_every=0))


def _evaluate(s: RetrievalExperimentSettings, model: Path, out: Path, layer: int | None) -> dict:
    path = out / "results.json"
    if not path.is_file():
        ev.run(ev.EvaluateSettings(model=str(model), task="retrieval", out_dir=str(out), device=s.device,
                                   data=[f"{lang}={_file(s, lang)}" for lang in s.languages if lang != s.pivot]
                                   + [f"{s.pivot}={_file(s, s.pivot)}"],
                                   pivot=s.pivot, layer=layer, eval_limit=s.eval_limit, per_layer=True))
    return json.loads(path.read_text(encoding="utf-8"))


def _untrained(trained: Path, seed: int, run_dir: Path) -> None:
    """An X-Mod of the trained run's config and tokenizer, freshly initialised from the seed, saved as a checkpoint."""
    if (run_dir / "config.json").is_file():
        return
    torch.manual_seed(seed)
    XmodForMaskedLM(XmodConfig.from_pretrained(trained)).save_pretrained(run_dir)
    tok_mod.save_tokenizer(tok_mod.load_tokenizer(trained), run_dir)


def _both(row: dict) -> float:
    return (row["acc@1"] + row["rev@1"]) / 2


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "values": values}


def render(results: dict) -> str:
    s = results["settings"]
    langs = [lang for lang in s["languages"] if lang != s["pivot"]]
    n = len(s['seeds'])
    lines = [f"# Retrieval: X-Mod against the shared baseline ({n} seed{'s' if n != 1 else ''})", "",
             f"Pivot {s['pivot']}; first {s['eval_limit']} aligned pairs per language (chance@1 "
             f"{100 / s['eval_limit']:.2g}%); accuracy@1 as the mean of both directions, layer {results['layer']}, "
             f"mean ± standard deviation over seeds. Fine-tuned on {', '.join(s['finetune'])} (pairs "
             f"{s['finetune_range']}); the other languages are zero-shot. \"untrained\": an X-Mod of the same "
             "shape, never trained (the surface-token baseline).", ""]
    columns = [(m, when) for m in MODELS for when in ("before", "after")]
    columns += [("untrained", "before")] if "untrained" in results["acc@1"] else []
    lines += ["| language | role | " + " | ".join(f"{NAMES[m]} {when}" if m in NAMES else m
                                                  for m, when in columns) + " |",
              "|---|---|" + "---:|" * len(columns)]
    for lang in [*langs, "zero-shot mean"]:
        role = "fine-tuned" if lang in s["finetune"] else ("" if lang == "zero-shot mean" else "zero-shot")
        cells = [results["acc@1"][m][when][lang] for m, when in columns]
        lines.append(f"| {lang} | {role} | " + " | ".join(f"{c['mean']:.2f} ± {c['sd']:.2f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run(s: RetrievalExperimentSettings) -> dict:
    for flag in ("data", "languages", "pivot", "finetune"):
        if not getattr(s, flag):
            raise ValueError(f"--{flag.replace('_', '-')} is required")
    _check_disjoint(s)
    out = Path(s.out_dir)
    runs, evals = out / "runs", out / "eval"
    tokenizer = None
    figures: dict = {m: {"before": {}, "after": {}} for m in MODELS}
    layer = None
    for seed in s.seeds:
        for model in MODELS:
            name = f"{model}-s{seed}"
            _pretrain(s, model, seed, runs / name, tokenizer)
            tokenizer = tokenizer or runs / name
            before = _evaluate(s, runs / name, evals / f"{name}-before", s.layer)
            layer = before["layer"]
            _finetune(s, runs / name, seed, runs / f"{name}-ft", layer)
            after = _evaluate(s, runs / f"{name}-ft", evals / f"{name}-after", layer)
            for when, r in (("before", before), ("after", after)):
                figures[model][when][seed] = {lang: _both(row) for lang, row in r["languages"].items()}
        if s.untrained:
            _untrained(runs / f"xmod-s{seed}", seed, runs / f"untrained-s{seed}")
            r = _evaluate(s, runs / f"untrained-s{seed}", evals / f"untrained-s{seed}", layer)
            figures.setdefault("untrained", {"before": {}})["before"][seed] = {
                lang: _both(row) for lang, row in r["languages"].items()}
    zero_shot = [lang for lang in s.languages if lang not in (*s.finetune, s.pivot)]
    table = {m: {when: {} for when in figures[m]} for m in figures}
    for m in figures:
        for when in figures[m]:
            per_seed = figures[m][when]
            for lang in [x for x in s.languages if x != s.pivot]:
                table[m][when][lang] = _stats([per_seed[seed][lang] for seed in s.seeds])
            table[m][when]["zero-shot mean"] = _stats(
                [statistics.fmean(per_seed[seed][lang] for lang in zero_shot) if zero_shot else float("nan")
                 for seed in s.seeds])
    results = {"settings": dataclasses.asdict(s), "layer": layer, "acc@1": table, "zero_shot": zero_shot}
    report.publish(out, results, render(results))
    print(f"results -> {out / 'results.json'}, {out / 'report.md'}")
    return results
