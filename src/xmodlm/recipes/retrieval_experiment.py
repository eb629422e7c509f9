"""``xmodlm experiment retrieval``: X-Mod against the shared baseline on cross-lingual retrieval, before and after
contrastive fine-tuning (issue 16's measurement); and the scoring of ``xmodlm experiment curse --retrieval``, which
reuses the curse experiment's runs (``score_curse_runs`` per seed, ``summarise``, ``render_curse_retrieval``).

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
import os
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import report
from .. import tokenizer as tok_mod
from ..config import XmodConfig
from ..languages import export_language, import_language
from ..model import XmodForMaskedLM, load_pretrained
from ..settings import setting
from . import evaluate as ev
from . import finetune as ft
from . import pretrain
from . import retrieval as rt

MODELS = ("xmod", "shared")
NAMES = {"xmod": "X-Mod", "shared": "shared"}
UNTRAINED = "untrained"  # the key of the untrained model's scores, beside the k of the trained runs


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


def _evaluate(s: RetrievalExperimentSettings, model: Path, out: Path, layer: int | None,
              fallback: str | None = None) -> dict:
    path = out / "results.json"
    if not path.is_file():
        ev.run(ev.EvaluateSettings(model=str(model), task="retrieval", out_dir=str(out), device=s.device,
                                   data=[f"{lang}={_file(s, lang)}" for lang in s.languages if lang != s.pivot]
                                   + [f"{s.pivot}={_file(s, s.pivot)}"], fallback=fallback,
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


# ---------------------------------------------------------------------------------------------------------------
# Retrieval on the runs of ``xmodlm experiment curse --retrieval`` (one seed at a time; experiment.py aggregates)


@dataclass
class CurseRuns:
    """What one seed of the curse experiment trained, for retrieval to score."""

    pretrained: dict[int, dict[str, Path]]  # k -> "xmod" | "shared" -> run directory
    finetune_k: list[int]  # the k whose runs are also fine-tuned contrastively
    related: dict[str, list[str]]  # extra pivot -> its relatives (same family) among the largest k's languages
    heldout: str | None = None  # the language added post hoc
    added: dict[str, Path] = dataclasses.field(default_factory=dict)  # addition name -> X-Mod with its modules


def read_families(data_dir: str | Path) -> dict[str, str]:
    """{code: family} from ``languages.tsv`` beside the corpora (../shared/data/bible has one); {} without it."""
    path = Path(data_dir) / "languages.tsv"
    if not path.is_file():
        return {}
    lines = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    header = lines[0]
    if "code" not in header or "family" not in header:
        raise ValueError(f"{path}: expected columns 'code' and 'family', found {header}")
    code, family = header.index("code"), header.index("family")
    return {row[code]: row[family] for row in lines[1:]}


def _scores(results: dict) -> dict[str, dict[str, float]]:
    """{lang: {"acc@1", "acc@10"}}, each the mean of the two directions (language -> pivot, pivot -> language)."""
    return {lang: {f"acc@{k}": (row[f"acc@{k}"] + row[f"rev@{k}"]) / 2 for k in (1, 10)}
            for lang, row in results["languages"].items()}


def _subset(s: RetrievalExperimentSettings, languages: list[str], pivot: str | None = None
            ) -> RetrievalExperimentSettings:
    """The settings for scoring `languages` against `pivot` (default: the main one; fine-tuning only with it)."""
    pivot = pivot or s.pivot
    finetune = [lang for lang in s.finetune if lang in languages] if pivot == s.pivot else []
    return dataclasses.replace(s, languages=list(languages), pivot=pivot, finetune=finetune)


def _graft(finetuned: Path, added: Path, code: str, out: Path) -> None:
    """The fine-tuned model with the added language's modules swapped in (they were trained post hoc on the
    pre-fine-tuning shared weights; fine-tuning froze every module): the paper's zero-shot protocol. Written to a
    temporary directory and renamed, so a directory that exists is complete."""
    if (out / "config.json").is_file():
        return
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    modules = export_language(load_pretrained(added), code, tmp / f"{code}.safetensors")
    model = load_pretrained(finetuned)
    import_language(model, modules, force=True)  # force: the shared weights were fine-tuned since
    modules.unlink()
    model.save_pretrained(tmp)
    tok_mod.save_tokenizer(tok_mod.load_tokenizer(finetuned), tmp)
    os.replace(tmp, out)


def score_curse_runs(s: RetrievalExperimentSettings, seed: int, runs: CurseRuns, out: Path) -> dict:
    """Retrieval figures of one seed's runs. ``s.languages``: the largest k's languages in their order (a run on k
    languages has the first k); ``s.pivot`` is among the first of every k.

    Every run is scored before fine-tuning; the runs of ``finetune_k`` are fine-tuned on ``s.finetune``'s pairs with
    the pivot and scored again; every extra pivot is scored against its relatives with the same models; an untrained
    X-Mod of the largest shape is the surface-token baseline; the held-out language is scored through each X-Mod
    that had it added (before fine-tuning; after it, with its modules grafted onto the fine-tuned X-Mod), and
    through the shared models and the untrained one as they are (fallback: the pivot's module, i.e. the shared
    module: they have no module of their own for it). Layout of `out`: eval/<what>/results.json, runs/ (fine-tuned,
    untrained and grafted models)."""
    _check_disjoint(s)
    evals, trained = out / "eval", out / "runs"
    k_max = max(runs.pretrained)
    figures: dict = {"pivot": s.pivot, "finetune": list(s.finetune), "k": {}, "related": {}}
    layer, finetuned = s.layer, {}

    def score(model_dir: Path, name: str, langs: list[str], when: str, k: str, model: str) -> None:
        """Every language of langs against the pivot, and each extra pivot against its relatives among them."""
        nonlocal layer
        main = _evaluate(_subset(s, langs), model_dir, evals / f"{name}-{when}", layer)
        layer = main["layer"]
        figures["k"].setdefault(k, {}).setdefault(model, {})[when] = _scores(main)
        for pivot, relatives in runs.related.items():
            members = [c for c in relatives if c in langs]
            if pivot in langs and members:
                fam = _evaluate(_subset(s, [*members, pivot], pivot), model_dir, evals / f"{name}-{when}-{pivot}",
                                layer)
                figures["related"].setdefault(pivot, {}).setdefault(k, {}).setdefault(model, {})[when] = _scores(fam)

    for k in sorted(runs.pretrained):
        langs = s.languages[:k]
        for model, run_dir in runs.pretrained[k].items():
            name = f"k{k}-{model}"
            score(run_dir, name, langs, "before", str(k), model)
            if k in runs.finetune_k and _subset(s, langs).finetune:
                finetuned[(k, model)] = trained / f"{name}-ft"
                _finetune(_subset(s, langs), run_dir, seed, finetuned[(k, model)], layer)
                score(finetuned[(k, model)], name, langs, "after", str(k), model)
    if s.untrained:  # one per seed, of the largest shape; a smaller k reads the scores of its own languages
        _untrained(runs.pretrained[k_max]["xmod"], seed, trained / "untrained")
        score(trained / "untrained", "untrained", s.languages[:k_max], "before", UNTRAINED, "untrained")
    if runs.heldout:
        figures["added"] = _score_added(s, runs, finetuned.get((k_max, "xmod")), finetuned.get((k_max, "shared")),
                                        trained, evals, layer, k_max)
    figures["layer"] = layer
    return figures


def _score_added(s: RetrievalExperimentSettings, runs: CurseRuns, xmod_ft: Path | None, shared_ft: Path | None,
                 trained: Path, evals: Path, layer: int | None, k_max: int) -> dict:
    """{row label: {"before": scores, "after": scores}} of the held-out language against the pivot."""
    code = runs.heldout
    pair = _subset(s, [code, s.pivot])
    rows: dict[str, dict] = {}

    def one(label: str, when: str, model_dir: Path, name: str, fallback: str | None = None) -> None:
        result = _evaluate(pair, model_dir, evals / name, layer, fallback)
        rows.setdefault(label, {})[when] = _scores(result)[code]

    for name, run_dir in runs.added.items():
        label = f"X-Mod + {code} added post hoc ({name})"
        one(label, "before", run_dir, f"added-{name}-before")
        if xmod_ft is not None:
            graft = trained / f"k{k_max}-xmod-ft+{code}-{name}"
            _graft(xmod_ft, run_dir, code, graft)
            one(label, "after", graft, f"added-{name}-after")
    label = f"shared, {code} never trained (through the shared module)"
    one(label, "before", runs.pretrained[k_max]["shared"], "added-shared-before", s.pivot)
    if shared_ft is not None:
        one(label, "after", shared_ft, "added-shared-after", s.pivot)
    if s.untrained:
        one(f"untrained X-Mod ({code} through the {s.pivot} module)", "before", trained / "untrained",
            "added-untrained", s.pivot)
    return {"language": code, "rows": rows}


# ---------------------------------------------------------------------------------------------------------------
# Summaries (per seed) and the report (over seeds) of the curse experiment's retrieval


METRICS = ("acc@1", "acc@10")
COMPARISONS = (("xmod", "shared"), ("xmod", UNTRAINED), ("shared", UNTRAINED))


def groups(pivot: str, finetune: list[str], languages: list[str], families: dict[str, str]) -> dict[str, list[str]]:
    """The language groups a table averages over (empty ones left out): all, fine-tuned, zero-shot, and zero-shot
    split by family (the pivot's own family, languages.tsv, against the others)."""
    langs = [lang for lang in languages if lang != pivot]
    tuned = [lang for lang in langs if lang in finetune]
    zero = [lang for lang in langs if lang not in tuned]
    family = families.get(pivot)
    related = [lang for lang in zero if family is not None and families.get(lang) == family]
    out = {"all": langs, "fine-tuned": tuned, "zero-shot": zero, "zero-shot, pivot's family": related,
           "zero-shot, other families": [lang for lang in zero if lang not in related]}
    return {name: members for name, members in out.items() if members}


def _mean_over(scores: dict, langs: list[str]) -> dict[str, float]:
    return {m: statistics.fmean(scores[lang][m] for lang in langs) for m in METRICS}


def summarise(figures: dict, order: list[str], families: dict[str, str]) -> dict:
    """One seed's group means ("groups": k -> model -> when -> group -> metrics; the untrained model's scores read
    on each k's languages) and paired differences of acc@1 ("differences": k -> when -> group -> "a - b")."""
    pivot, tuned = figures["pivot"], figures["finetune"]
    untrained = figures["k"].get(UNTRAINED, {}).get("untrained", {}).get("before")
    summary: dict = {}
    differences: dict = {}
    for k, models in figures["k"].items():
        if k == UNTRAINED:
            continue
        parts = groups(pivot, tuned, order[:int(k)], families)
        by_model = {m: {when: {g: _mean_over(scores, langs) for g, langs in parts.items()}
                        for when, scores in whens.items()} for m, whens in models.items()}
        if untrained:
            by_model[UNTRAINED] = {"before": {g: _mean_over(untrained, langs) for g, langs in parts.items()}}
        summary[k] = by_model
        for when in ("before", "after"):
            for g in parts:
                for a, b in COMPARISONS:
                    ra = by_model.get(a, {}).get(when, {}).get(g)
                    rb = by_model.get(b, {}).get(when if b != UNTRAINED else "before", {}).get(g)
                    if ra and rb:
                        differences.setdefault(k, {}).setdefault(when, {}).setdefault(g, {})[
                            f"{a} - {b}"] = ra["acc@1"] - rb["acc@1"]
    related = {}
    for pivot_r, by_k in figures["related"].items():
        for k, models in by_k.items():
            members = list(next(iter(next(iter(models.values())).values())))
            main = figures["k"][k]
            related.setdefault(pivot_r, {})[k] = {
                m: {when: {"related pivot": _mean_over(scores, members),
                           f"{pivot} (main pivot)": _mean_over(main[m][when], members)}
                    for when, scores in whens.items()} for m, whens in models.items()}
    return {"groups": summary, "differences": differences, "related": related}


def _plain(value):
    """A setting that is the same in every seed: its value (``report.over_seeds`` made it a mean_sd)."""
    return value["mean"] if isinstance(value, dict) else value


def _cell(stat: dict | None) -> str:
    return report.format_mean_sd(stat)


def _pick(tree: dict | None, *path: str) -> dict | None:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _columns(finetuned: bool, untrained: bool) -> list[tuple[str, str]]:
    columns = [(m, when) for m in MODELS for when in (("before", "after") if finetuned else ("before",))]
    return columns + ([(UNTRAINED, "before")] if untrained else [])


def _column_names(columns: list[tuple[str, str]]) -> list[str]:
    return [f"{NAMES.get(m, m)} {when}" if m != UNTRAINED else "untrained" for m, when in columns]


def render_curse_retrieval(agg: dict, order: list[str], families: dict[str, str], n_seeds: int) -> str:
    """The retrieval sections of the curse experiment's report; agg: ``report.over_seeds`` of the seeds' figures
    (each with its ``summarise``)."""
    pivot, tuned = agg["pivot"], agg["finetune"]
    counts = sorted(int(k) for k in agg["k"] if k != UNTRAINED)
    k_max = counts[-1]
    has_untrained = UNTRAINED in agg["k"]
    finetuned = any(_pick(agg, "k", str(k), "xmod", "after") for k in counts)
    columns = _columns(finetuned, has_untrained)
    family = families.get(pivot, "?")
    layer, limit = _plain(agg["layer"]), int(_plain(agg["eval_limit"]))
    lines = [f"## Retrieval against {pivot} ({family}), k={k_max}", "",
             f"Accuracy@1 in % (mean of both directions), first {limit:,} aligned pairs per language (chance "
             f"{100 / limit:.2g}%), layer {layer:g}, mean ± sample standard deviation over {n_seeds} "
             f"seed{'s' if n_seeds != 1 else ''}. \"after\": contrastive fine-tuning on the pairs of "
             f"{', '.join(tuned)} with {pivot}; every other language is zero-shot. \"untrained\": an X-Mod of the "
             "same shape never trained (the surface-token baseline). relation: the family of languages.tsv "
             "compared with the pivot's.", ""]
    header = ["language", "family", "relation", "role", *_column_names(columns)]
    rows = []
    for lang in order[:k_max]:
        if lang == pivot:
            continue
        relation = "same family" if families.get(lang) and families.get(lang) == family else "unrelated"
        role = "fine-tuned" if lang in tuned else "zero-shot"
        key = lambda m: str(k_max) if m != UNTRAINED else UNTRAINED  # noqa: E731
        rows.append([lang, families.get(lang, "?"), relation, role]
                    + [_cell(_pick(agg, "k", key(m), m, when, lang, "acc@1")) for m, when in columns])
    for g in agg["summary"]["groups"][str(k_max)]["xmod"]["before"]:
        rows.append([f"**mean: {g}**", "", "", ""]
                    + [_cell(_pick(agg, "summary", "groups", str(k_max), m, when, g, "acc@1")) for m, when in columns])
    lines += [report.markdown_table(header, rows, align="llll" + "r" * len(columns)), ""]
    lines += _added_section(agg, pivot)
    lines += _related_section(agg, columns, families)
    lines += _by_k_section(agg, counts, has_untrained)
    lines += _differences_section(agg)
    return "\n".join(lines) + "\n"


def _added_section(agg: dict, pivot: str) -> list[str]:
    added = agg.get("added")
    if not added:
        return []
    code = added["language"]
    header = ["model", "acc@1 before", "acc@1 after", "acc@10 before", "acc@10 after"]
    rows = [[label, *[_cell(_pick(row, when, metric)) for metric in METRICS for when in ("before", "after")]]
            for label, row in added["rows"].items()]
    return [f"### {code}, added after pre-training, against {pivot}", "",
            f"X-Mod: {code}'s modules trained post hoc (add-language; shared weights frozen) on the largest k's model, "
            "before fine-tuning; \"after\": the same modules swapped into the fine-tuned X-Mod (fine-tuning never saw "
            f"{code}). The shared baseline has no per-language part to add: the counterpart without touching the "
            f"weights every other language uses is the shared model as it is, {code} never trained.", "",
            report.markdown_table(header, rows), ""]


def _related_section(agg: dict, columns: list[tuple[str, str]], families: dict[str, str]) -> list[str]:
    lines = []
    for pivot_r, by_k in agg.get("related", {}).items():
        # The largest k that has the family (the untrained model, of the largest shape, has all of its members).
        k = max((k for k in by_k if k != UNTRAINED), key=int, default=None)
        if k is not None:
            models = by_k[k]
            members = list(_pick(models, "xmod", "before") or {})
            lines += [f"### Related languages: {families.get(pivot_r, '?')} against {pivot_r}, k={k}", "",
                      f"The same models, {pivot_r} as the pivot for its relatives; the mean row compares it with "
                      "the same languages against the main pivot (unrelated).", ""]
            header = ["language", *_column_names(columns)]
            key = lambda m: k if m != UNTRAINED else UNTRAINED  # noqa: E731
            rows = [[lang, *[_cell(_pick(agg, "related", pivot_r, key(m), m, when, lang, "acc@1"))
                             for m, when in columns]] for lang in members]
            summary = _pick(agg, "summary", "related", pivot_r, k) or {}
            for label in _pick(summary, "xmod", "before") or {}:
                rows.append([f"**mean, {label}**", *[_cell(_pick(agg, "summary", "related", pivot_r, key(m), m,
                                                                   when, label, "acc@1")) for m, when in columns]])
            lines += [report.markdown_table(header, rows), ""]
    return lines


def _by_k_section(agg: dict, counts: list[int], has_untrained: bool) -> list[str]:
    header = ["k", "X-Mod before", "shared before", "X-Mod after", "shared after"]
    header += ["untrained (same languages)"] if has_untrained else []
    rows = []
    for k in counts:
        g = _pick(agg, "summary", "groups", str(k))
        cells = [_cell(_pick(g, m, when, "all", "acc@1")) for when in ("before", "after") for m in MODELS]
        cells += [_cell(_pick(g, UNTRAINED, "before", "all", "acc@1"))] if has_untrained else []
        rows.append([k, *cells])
    return ["### Mean accuracy@1 over every pre-training language of each k", "",
            "Before fine-tuning at every k; after it where that k was fine-tuned.", "",
            report.markdown_table(header, rows), ""]


def _differences_section(agg: dict) -> list[str]:
    header = ["k", "when", "languages", *[f"{NAMES.get(a, a)} − {NAMES.get(b, b)}" for a, b in COMPARISONS]]
    rows = []
    for k, whens in sorted(agg["summary"]["differences"].items(), key=lambda kv: int(kv[0])):
        for when, by_group in whens.items():
            for g, diffs in by_group.items():
                rows.append([int(k), when, g, *[_cell(diffs.get(f"{a} - {b}")) for a, b in COMPARISONS]])
    return ["### Paired differences of accuracy@1 (points), mean ± sd over seeds", "",
            "Each seed's difference of the group means (the same seed's runs share batches and tokenizer); a "
            "difference smaller than its sd is within seed noise.", "",
            report.markdown_table(header, rows, align="rll" + "r" * len(COMPARISONS)), ""]
