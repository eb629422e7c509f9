"""Adding a language after pre-training against pre-training it from the start (``xmodlm experiment addition``).

Protocol, for every seed in ``--seeds`` and every scale S in ``--steps-per-language``:

- Languages: k pre-training languages and three held-out ones, fixed before any run by a rule on ``languages.tsv``
  (family and script of every corpus; ``--languages``/``--heldout`` override it). Default rule: the pre-training
  languages are the first ``--k`` Latin-script codes in sorted order; of the codes after them (sorted), the first
  Latin-script one whose family has a pre-training member is ``related``, the first Latin-script one whose family
  has none is ``unrelated``, and the first one whose script no pre-training language uses is ``script``. The related
  language's modules start as a copy of its first relative among the pre-training languages, the others' as the
  average of all k languages' modules (``--init-from role=CODE`` overrides).
- Two tokenizers per seed (the same for every S): ``base`` trained on the k languages, ``joint`` on the k + 3.
- Base: X-Mod pre-trained on the k languages for k * S updates (one language per batch, uniform draw: each language
  expects S updates). Joint: X-Mod pre-trained on the k + 3 languages from the start for (k + 3) * S updates, with
  the joint tokenizer. Post hoc: each held-out language added to the base model with ``add-language`` (its modules,
  the vocabulary rows it adds and the never-seen rows it uses train; everything else frozen), for exactly the
  updates that language received in the joint run (measured from the joint run's data state; S where that fails),
  with add-language's defaults for everything else (learning rate, warm-up, vocabulary extension, row init).
- Score, per held-out language, on its last ``--valid-lines`` lines: bits per character (masked-LM loss of the masked
  pieces over the characters they cover, ``vocab.mlm_loss_per_character``; comparable across tokenisations, which
  differ between the arms), perplexity per piece over all, seen and unseen target pieces (seen: the piece occurs in
  the k pre-training languages' training text under that arm's tokenizer), and the ``<unk>`` rate. The post-hoc /
  joint ratio is the ratio of per-character perplexities, 2 ** (bits_post - bits_joint).
- The old languages' encoder outputs and masked-LM losses, base model against every post-hoc model, on one
  validation batch of each pre-training language: compared bit for bit.
- ``--sweep-language`` (item 4 of the addition issue): on the first seed's base model at ``--sweep-scale``, adds one
  more language (not in the table) for every learning rate and number of updates of ``--sweep-lrs`` x
  ``--sweep-steps`` (0 updates: one update at learning rate 0), to check that more updates never make seen-piece
  perplexity worse with the default learning rate.

Layout of ``--out``: settings.json, plan.json, seed{n}/tokenizer-{base,joint}/, seed{n}/steps{S}/{base,joint,add-CODE}/
(one training run each), seed{n}/steps{S}/scores.json, sweep/, results.json, report.md, addition_ratio.png.
Re-running skips finished runs and scores; ``--seeds`` and ``--steps-per-language`` only choose which runs happen,
so two processes may share one ``--out`` with different seeds, and a last invocation with all of them writes the
complete report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data as data_mod
from .. import report
from .. import tokenizer as tok_mod
from .. import vocab as vocab_mod
from ..model import XmodForMaskedLM
from ..settings import setting
from . import add_language, pretrain
from .experiment import UpdateCounter, _execute, _train_seconds, _wall

ROLES = ("related", "unrelated", "script")
# Settings that only choose which runs happen or how they are logged; finished runs stay valid when they change.
_FREE_SETTINGS = ("out_dir", "seeds", "steps_per_language", "device", "log_every", "save_every", "sweep_language",
                  "sweep_scale", "sweep_lrs", "sweep_steps", "sweep_warmups", "sweep_init_from", "joint_vocab_arm",
                  "sweep_warmup_lr", "init_arms", "all_rows_arm")


def _check_init_arm(arm: str) -> None:
    method, _, flag = arm.partition(":")
    if method not in vocab_mod.INIT_METHODS or flag not in ("", "nocopy"):
        raise ValueError(f"--init-arms {arm!r}: expected METHOD or METHOD:nocopy, METHOD one of "
                         f"{', '.join(vocab_mod.INIT_METHODS)}")


@dataclass
class AdditionSettings:
    data: str = setting("", "directory of per-language corpora <code>.txt with a languages.tsv (code, family, "
                            "script), e.g. ../shared/data/bible")
    out_dir: str = setting("runs/addition", "output directory: runs, scores, results.json, report.md, plot",
                           flags=("--out",))
    k: int = setting(8, "number of pre-training languages the default rule picks", low=1)
    languages: list[str] = setting([], "pre-training languages (default: the first --k Latin-script codes)")
    heldout: str = setting("", "held-out languages as role=CODE,... for the roles related, unrelated, script "
                               "(default: the rule in the module docstring)")
    init_from: str = setting("", "module initialisation as role=CODE[+CODE...],... (default: related: its first "
                                 "relative; the others: the average of all pre-training languages)")
    steps_per_language: list[int] = setting([100, 300, 1000], "scales: expected updates per language (pre-training "
                                                             "on n languages trains n times this)", low=1)
    seeds: list[int] = setting([0, 1, 2], "seeds; every seed has its own tokenizers, initialisation and batches", low=0)
    preset: str = setting("tiny", "architecture: tiny | small | base | large-prenorm")
    hidden_size: int | None = setting(64, "override the preset's hidden size", low=1)
    num_hidden_layers: int | None = setting(None, "override the preset's number of layers", low=1)
    adapter_reduction_factor: int | None = setting(None, "override the module bottleneck: hidden / this", low=1)
    vocab_size: int = setting(4000, "size of each tokenizer (base: k languages; joint: k + 3)", low=8)
    seq_len: int = setting(64, "tokens per packed row", low=4)
    batch_size: int = setting(16, "rows per batch", low=1)
    lr: float = setting(1e-3, "peak learning rate of pre-training", above=0)
    warmup_ratio: float = setting(0.06, "pre-training warm-up as a fraction of its steps", low=0, high=1)
    add_lr: float | None = setting(None, "peak learning rate of the additions (default: add-language's)", above=0)
    add_warmup_ratio: float | None = setting(None, "warm-up of the additions (default: add-language's)", low=0, high=1)
    add_vocabulary: str = setting("own", "the additions' vocabulary (add-language --vocabulary): own | extend",
                                  check=add_language._check_vocabulary)
    valid_lines: int = setting(200, "last lines of every corpus held out for validation", low=1)
    valid_batches: int = setting(16, "validation batches per language (16 x 16 rows of 64 covers 200 bible verses)",
                                 low=1)
    precision: str = setting("fp32", "fp32 | bf16 | auto")
    device: str = setting("cpu", "auto | cpu | cuda")
    log_every: int = setting(50, "training metrics every N steps", low=1)
    save_every: int = setting(1000, "checkpoint every N steps (interrupted runs resume from the last one)", low=1)
    sweep_language: str = setting("", "also sweep add-language's learning rate and updates on this language (not "
                                      "reported in the table; e.g. ukr_Cyrl)")
    sweep_scale: int = setting(0, "scale of the base model the sweep uses (0: the middle of --steps-per-language)",
                               low=0)
    sweep_lrs: list[float] = setting([3e-4, 1e-3, 3e-3], "learning rates of the sweep", above=0)
    sweep_steps: list[int] = setting([0, 100, 300, 1000], "updates of the sweep (0: the initialisation alone)", low=0)
    sweep_warmups: list[float] = setting([], "extra warm-up ratios, tried at --sweep-warmup-lr", low=0, high=1)
    sweep_warmup_lr: float = setting(1e-3, "learning rate of the extra warm-up ratios", above=0)
    sweep_init_from: str = setting("", "modules the sweep copies (default: the first pre-training language)")
    init_arms: list[str] = setting([], "also add each held-out language with these initialisations of its rows, "
                                       "at every scale and seed: METHOD or METHOD:nocopy (METHOD: mean | script | "
                                       "overlap; nocopy: no row starts as a copy of the shared row of its piece); "
                                       "each arm and the default also after 0 updates (the initialisation alone)",
                                   check=_check_init_arm)
    all_rows_arm: bool = setting(False, "also add each held-out language with add-language --no-own-softmax (its "
                                        "softmax over every row while it trains and when scored, as transformers "
                                        "computes it)")
    joint_vocab_arm: bool = setting(False, "also add each held-out language to a base model pre-trained on the k "
                                           "languages with the joint tokenizer (a vocabulary that already covers "
                                           "it, as XLM-R's covers the paper's added languages): separates the "
                                           "tokenizer's share of the gap from the frozen model's")


@dataclass
class Plan:
    corpora: dict[str, Path]
    order: list[str]  # pre-training languages, in id order
    heldout: dict[str, str]  # role -> code
    init_from: dict[str, list[str]]  # role -> codes whose modules are copied (one) or averaged (several)
    info: dict[str, dict[str, str]]  # code -> {"family", "script"}
    rule: str


# ---------------------------------------------------------------------------------------------------------------
# Planning


def read_language_info(data: Path) -> dict[str, dict[str, str]]:
    """code -> {"family", "script"} from ``languages.tsv`` (empty where the file is absent)."""
    path = data / "languages.tsv"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as f:
        return {row["code"]: {"family": row["family"], "script": row["script"]}
                for row in csv.DictReader(f, delimiter="\t")}


def _pairs(text: str, what: str) -> dict[str, str]:
    out = {}
    for part in filter(None, text.split(",")):
        role, sep, value = part.partition("=")
        if not sep or role not in ROLES or not value:
            raise ValueError(f"--{what} {text!r}: expected role=CODE,... with roles {', '.join(ROLES)}")
        out[role] = value
    return out


def make_plan(s: AdditionSettings) -> Plan:
    data = Path(s.data)
    corpora = data_mod.discover_corpora(data)
    info = read_language_info(data)
    codes = list(corpora)
    order = list(s.languages)
    rule = "chosen with --languages"
    if not order:
        if not info:
            raise ValueError(f"{data} has no languages.tsv: pass --languages and --heldout")
        order = [c for c in codes if info.get(c, {}).get("script") == "Latn"][: s.k]
        rule = f"the first {s.k} Latin-script codes in sorted order"
    missing = [c for c in order if c not in corpora]
    if missing or len(order) < 1:
        raise ValueError(f"pre-training languages {missing or order}: no corpus in {data}")
    rest = [c for c in codes if c not in order]
    families = {info[c]["family"] for c in order if c in info}
    scripts = {info[c]["script"] for c in order if c in info}

    def first(test, role: str) -> str:
        found = next((c for c in rest if c in info and test(info[c])), None)
        if found is None:
            raise ValueError(f"no {role} language in {data} for the rule; give --heldout {role}=CODE")
        return found

    heldout = _pairs(s.heldout, "heldout")
    if "related" not in heldout:
        heldout["related"] = first(lambda i: i["script"] in scripts and i["family"] in families, "related")
    if "unrelated" not in heldout:
        heldout["unrelated"] = first(lambda i: i["script"] in scripts and i["family"] not in families, "unrelated")
    if "script" not in heldout:
        heldout["script"] = first(lambda i: i["script"] not in scripts, "script")
    for role, code in heldout.items():
        if code not in corpora or code in order:
            raise ValueError(f"--heldout {role}={code}: needs a corpus in {data} and must not be a pre-training "
                             "language")
    if len(set(heldout.values())) != len(ROLES):
        raise ValueError(f"held-out languages {heldout}: one distinct language per role")
    init = {role: value.split("+") for role, value in _pairs(s.init_from, "init-from").items()}
    if "related" not in init:
        family = info.get(heldout["related"], {}).get("family")
        relatives = [c for c in order if info.get(c, {}).get("family") == family]
        init["related"] = relatives[:1] or list(order)
    for role in ROLES:
        init.setdefault(role, list(order))
        bad = [c for c in init[role] if c not in order]
        if bad:
            raise ValueError(f"--init-from {role}: {bad} are not pre-training languages {order}")
    keep = order + [heldout[r] for r in ROLES] + ([s.sweep_language] if s.sweep_language else [])
    if s.sweep_language and (s.sweep_language not in corpora or s.sweep_language in order):
        raise ValueError(f"--sweep-language {s.sweep_language}: needs a corpus in {data}, not a pre-training one")
    return Plan({c: corpora[c] for c in keep}, order, {r: heldout[r] for r in ROLES}, init,
                {c: info[c] for c in keep if c in info}, rule)


def _check(s: AdditionSettings) -> None:
    if not s.data:
        raise ValueError("--data is required (e.g. ../shared/data/bible)")
    if not s.seeds or not s.steps_per_language:
        raise ValueError("--seeds and --steps-per-language need at least one value each")
    for name in ("k", "vocab_size", "seq_len", "batch_size", "valid_lines", "valid_batches"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(s, name)}: must be >= 1")
    if min(s.steps_per_language) < 1:
        raise ValueError(f"--steps-per-language {s.steps_per_language}: every scale must be >= 1")


def _check_saved(path: Path, mine: dict, what: str) -> None:
    """A directory belongs to one set of settings and languages: finished runs are reused, so they must match."""
    if path.exists():
        saved = json.loads(path.read_text())
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        if diff:
            details = ", ".join(f"{k}: {saved.get(k)!r} there, {mine.get(k)!r} now" for k in diff)
            raise ValueError(f"{path.parent} holds an experiment with other {what} ({details}); use another --out, "
                             "or the same settings to resume it")
        return
    report.write_json(path, mine)


# ---------------------------------------------------------------------------------------------------------------
# Runs


def _tokenizer(s: AdditionSettings, plan: Plan, codes: list[str], path: Path, seed: int) -> Path:
    if not (path / "tokenizer.json").is_file():
        print(f"seed {seed}: training a {s.vocab_size}-piece tokenizer on {len(codes)} languages -> {path}",
              flush=True)
        tok = tok_mod.train_tokenizer({c: plan.corpora[c] for c in codes}, vocab_size=s.vocab_size, alpha=0.0,
                                      seed=seed, skip_lines=s.valid_lines, progress=False)
        tok_mod.save_tokenizer(tok, path)
    return path


def _common(s: AdditionSettings, seed: int) -> dict[str, Any]:
    return dict(seq_len=s.seq_len, batch_size=s.batch_size, valid_lines=s.valid_lines, valid_batches=s.valid_batches,
                save_every=s.save_every, seed=seed, precision=s.precision, device=s.device, log_every=s.log_every,
                eval_every=0, tensorboard=False)


def pretrain_run(s: AdditionSettings, plan: Plan, languages: list[str], tokenizer: Path, run_dir: Path, steps: int,
                 seed: int, label: str) -> dict:
    settings = pretrain.PretrainSettings(
        data=s.data, languages=languages, out_dir=str(run_dir), preset=s.preset, hidden_size=s.hidden_size,
        num_hidden_layers=s.num_hidden_layers, adapter_reduction_factor=s.adapter_reduction_factor,
        tokenizer=str(tokenizer), alpha=0.0, max_steps=steps, lr=s.lr, warmup_ratio=s.warmup_ratio,
        **_common(s, seed))
    results, _ = _execute(run_dir, label, lambda: pretrain.run(settings))
    return {"dir": str(run_dir), "steps": steps, "train_s": _train_seconds(run_dir), "wall_s": _wall(run_dir),
            "ppl": {c: results[f"eval/ppl/{c}"] for c in languages}}


def add_run(s: AdditionSettings, plan: Plan, base: Path, code: str, init_from: list[str], run_dir: Path,
            steps: int, seed: int, label: str, lr: float | None = None, warmup: float | None = None,
            **overrides: Any) -> dict:
    extra = {}
    lr = s.add_lr if lr is None else lr
    warmup = s.add_warmup_ratio if warmup is None else warmup
    if lr is not None:
        extra["lr"] = lr
    if warmup is not None:
        extra["warmup_ratio"] = warmup
    settings = add_language.AddLanguageSettings(
        model=str(base), lang=code, data=str(plan.corpora[code]), out_dir=str(run_dir), init_from=list(init_from),
        max_steps=steps, vocabulary=s.add_vocabulary, **extra, **overrides, **_common(s, seed))
    results, _ = _execute(run_dir, label, lambda: add_language.run(settings))
    keep = ("vocabulary", "added_pieces", "copied_rows", "new_characters", "unseen_rows_trained", "unk_rate_before",
            "unk_rate_after", "trainable_parameters", "eval/bits_per_char")
    return {"dir": str(run_dir), "steps": steps, "lr": settings.lr, "warmup_ratio": settings.warmup_ratio,
            "init_from": list(init_from), "train_s": _train_seconds(run_dir), "wall_s": _wall(run_dir),
            **{k: results.get(k) for k in keep}}


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def seen_pieces(tok, plan: Plan, valid_lines: int, size: int) -> np.ndarray:
    """Bool mask over ``size`` ids: the piece occurs in the pre-training languages' training text under ``tok``."""
    seen = np.zeros(size, dtype=bool)
    for code in plan.order:
        counts = vocab_mod.count_ids(tok, vocab_mod.training_lines(plan.corpora[code], valid_lines))
        seen[: counts.size] |= counts[:size] > 0
    return seen


def _validation_texts(path: Path, valid_lines: int) -> list[str]:
    n = data_mod.count_lines(path)
    return [t for _, _, t in data_mod.read_lines(path, n - valid_lines, n,
                                                 report=data_mod.CorpusReport(max_logged=0))]


def score_language(model: XmodForMaskedLM, tok, code: str, path: Path, seen: np.ndarray, s: AdditionSettings,
                   seed: int, restrict: np.ndarray | None = None) -> dict[str, float]:
    """The held-out language's validation scores under one arm (model and its tokenizer): bits per character,
    perplexity per piece over all, seen and unseen targets, <unk> rate of its validation text. ``restrict`` (a bool
    mask over ids): the softmax covers only those ids (where the target is one of them; else every id)."""
    batches = data_mod.validation_batches({code: path}, tok, [code], seq_len=s.seq_len, batch_size=s.batch_size,
                                          valid_lines=s.valid_lines, max_batches=s.valid_batches, seed=seed)[code]
    lang_id = model.config.languages.index(code)
    lengths = torch.as_tensor(vocab_mod.piece_lengths(tok), dtype=torch.float64)
    seen_t = torch.as_tensor(seen)
    losses, targets = [], []
    model.eval()
    with torch.no_grad():
        for batch in batches:
            batch = dict(batch, lang_ids=torch.full_like(batch["lang_ids"], lang_id))
            labels = batch["labels"]
            target = labels[labels != -100]
            logits = model(**batch).logits
            if restrict is not None:
                keep = torch.as_tensor(restrict[: logits.shape[-1]])
                inside = keep[target]
                logits = torch.where(inside[:, None] & ~keep[None, :], float("-inf"), logits)
            losses.append(torch.nn.functional.cross_entropy(logits.float(), target, reduction="none").double())
            targets.append(target)
    loss, target = torch.cat(losses), torch.cat(targets)
    chars = float(lengths[target].sum())
    is_seen = seen_t[target]

    def ppl(mask: torch.Tensor) -> float | None:
        return math.exp(float(loss[mask].mean())) if bool(mask.any()) else None

    unk, total = vocab_mod.unk_rate(tok, _validation_texts(path, s.valid_lines))
    return {"bits_per_char": float(loss.sum()) / chars / math.log(2), "ppl": ppl(torch.ones_like(is_seen)),
            "ppl_seen": ppl(is_seen), "ppl_unseen": ppl(~is_seen), "unseen_share": float((~is_seen).double().mean()),
            "targets": int(target.numel()), "chars": chars, "chars_per_piece": chars / max(int(target.numel()), 1),
            "unk_rate": unk / max(total, 1)}


def old_languages_identical(base: XmodForMaskedLM, added: XmodForMaskedLM, batches: dict[str, list[dict]]) -> dict:
    """Encoder outputs and masked-LM losses of every old language, base model against the model with a language
    added, compared bit for bit on the given batches (tokenised with the base tokenizer). An addition may train
    rows that pre-training never drew (add-language --train-unseen-rows); a sequence holding such a piece changes
    by design, so the encoder outputs are also compared on the sequences without one (``clean_*``)."""
    base.eval()
    added.eval()
    old = base.config.vocab_size
    w_base = base.roberta.embeddings.word_embeddings.weight
    w_added = added.roberta.embeddings.word_embeddings.weight[:old]
    trained = (w_base != w_added).any(dim=1)  # rows the addition moved
    encoder, loss, clean, n_clean, n = True, True, True, 0, 0
    with torch.no_grad():
        for items in batches.values():
            for batch in items:
                a, b = base(**batch, output_hidden_states=True), added(**batch, output_hidden_states=True)
                ha, hb = a.hidden_states[-1], b.hidden_states[-1]
                encoder &= torch.equal(ha, hb)
                loss &= torch.equal(a.loss, b.loss)
                keep = ~trained[batch["input_ids"]].any(dim=1)
                clean &= torch.equal(ha[keep], hb[keep])
                n_clean += int(keep.sum())
                n += int(keep.numel())
    return {"encoder_outputs": bool(encoder), "mlm_loss": bool(loss), "clean_encoder_outputs": bool(clean),
            "clean_sequences": n_clean, "sequences": n, "rows_trained": int(trained.sum()),
            "languages": len(batches)}


class Scorer:
    """Loads models and tokenizers of one seed and caches what every scale shares (seen-piece masks)."""

    def __init__(self, s: AdditionSettings, plan: Plan, seed: int, tokenizers: dict[str, Path]):
        self.s, self.plan, self.seed = s, plan, seed
        self.toks = {arm: tok_mod.load_tokenizer(path) for arm, path in tokenizers.items()}
        self._seen: dict[str, np.ndarray] = {}

    def seen(self, arm: str, tok=None) -> np.ndarray:
        """Seen-piece mask over the ids of ``tok`` (default: the arm's own): a piece is seen where the same piece
        occurs in the pre-training text under the arm's tokenizer (pieces appended by an extension never do; an own
        vocabulary's pieces do where the shared vocabulary has them)."""
        base = self.toks[arm]
        if arm not in self._seen:
            self._seen[arm] = seen_pieces(base, self.plan, self.s.valid_lines, base.get_vocab_size())
        tok = tok or base
        mask = np.zeros(tok.get_vocab_size(), dtype=bool)
        for piece, i in tok.get_vocab().items():
            j = base.token_to_id(piece)
            mask[i] = j is not None and j < self._seen[arm].size and bool(self._seen[arm][j])
        return mask

    def old_batches(self, arm: str = "base") -> dict[str, list[dict]]:
        s = self.s
        return data_mod.validation_batches({c: self.plan.corpora[c] for c in self.plan.order}, self.toks[arm],
                                           self.plan.order, seq_len=s.seq_len, batch_size=s.batch_size,
                                           valid_lines=s.valid_lines, max_batches=1, seed=self.seed)

    def posthoc(self, run_dir: Path, code: str, base: XmodForMaskedLM | None = None, arm: str = "base") -> dict:
        """Scores of a post-hoc model; ``arm``: the tokenizer its base model was pre-trained with."""
        model = XmodForMaskedLM.from_pretrained(run_dir)
        tok = tok_mod.load_language_tokenizer(run_dir, code)
        seen = self.seen(arm, tok)
        out = score_language(model, tok, code, self.plan.corpora[code], seen, self.s, self.seed)
        if model.config.vocab_range(code) != (0, model.config.vocab_size):  # a control: the softmax over all rows
            for key in ("language_vocab_starts", "language_vocab_sizes"):
                model.config.extra.get(key, {}).pop(code, None)
            full = score_language(model, tok, code, self.plan.corpora[code], seen, self.s, self.seed)
            out["bits_per_char_full_softmax"] = full["bits_per_char"]
        if base is not None:
            out["old_identical"] = old_languages_identical(base, model, self.old_batches(arm))
        return out

    def joint(self, run_dir: Path, code: str) -> dict:
        model = XmodForMaskedLM.from_pretrained(run_dir)
        tok = self.toks["joint"]
        out = score_language(model, tok, code, self.plan.corpora[code], self.seen("joint"), self.s, self.seed)
        out["bits_per_char_own_pieces"] = self.joint_own_pieces(run_dir, code, model)
        return out

    def joint_own_pieces(self, run_dir: Path, code: str, model: XmodForMaskedLM | None = None) -> float:
        """Bits per character of the joint model with its softmax kept to the pieces the joint tokenizer makes of
        the language's training text: the restriction an own vocabulary has by construction, given to the joint
        arm too (a like-with-like control)."""
        model = model or XmodForMaskedLM.from_pretrained(run_dir)
        tok = self.toks["joint"]
        lines = vocab_mod.training_lines(self.plan.corpora[code], self.s.valid_lines)
        pieces = vocab_mod.count_ids(tok, lines, tok.get_vocab_size()) > 0
        return score_language(model, tok, code, self.plan.corpora[code], self.seen("joint"), self.s, self.seed,
                              restrict=pieces)["bits_per_char"]


def ratio(post_bits: float, joint_bits: float) -> float:
    """Post-hoc / joint per-character perplexity."""
    return 2.0 ** (post_bits - joint_bits)


# ---------------------------------------------------------------------------------------------------------------
# The experiment


def run_scale(s: AdditionSettings, plan: Plan, seed: int, steps: int, tokenizers: dict[str, Path], scorer: Scorer,
              counter: UpdateCounter, label: str) -> dict:
    root = Path(s.out_dir) / f"seed{seed}" / f"steps{steps}"
    done = root / "scores.json"
    if done.is_file():
        print(f"{label}: scored before, skipped ({done})", flush=True)
        entry = json.loads(done.read_text())
        missing = [r for r in entry["roles"].values() if "bits_per_char_own_pieces" not in r["joint"]]
        for r in missing:  # scored before the control existed: add it
            r["joint"]["bits_per_char_own_pieces"] = scorer.joint_own_pieces(root / "joint", r["code"])
        if missing:
            report.write_json(done, entry)
    else:
        entry = _run_scale(s, plan, seed, steps, tokenizers, scorer, counter, label, root)
    if s.joint_vocab_arm:
        joint_vocab_arm(s, plan, seed, steps, tokenizers, scorer, entry, label, root)
    if s.init_arms:
        init_arms(s, plan, seed, steps, scorer, entry, label, root)
    if s.all_rows_arm:
        all_rows_arm(s, plan, seed, steps, scorer, entry, label, root)
    return entry


def all_rows_arm(s: AdditionSettings, plan: Plan, seed: int, steps: int, scorer: Scorer, entry: dict, label: str,
                 root: Path) -> dict:
    """Each held-out language added with its softmax over every row (scores-all-rows.json: {role: bits/char})."""
    done = root / "scores-all-rows.json"
    out = json.loads(done.read_text()) if done.is_file() else {}
    for role in ROLES:
        if role in out:
            continue
        code, updates = plan.heldout[role], entry["roles"][role]["updates"]
        run_dir = root / f"add-{code}-allsoftmax"
        add_run(s, plan, root / "base", code, plan.init_from[role], run_dir, updates, seed,
                f"{label} add {role} {code} with its softmax over every row, {updates} updates", own_softmax=False)
        out[role] = scorer.posthoc(run_dir, code)["bits_per_char"]
        report.write_json(done, out)
    return out


DEFAULT_INIT = "overlap"  # add-language's --embed-init default, with copies of shared rows


def init_arms(s: AdditionSettings, plan: Plan, seed: int, steps: int, scorer: Scorer, entry: dict, label: str,
              root: Path) -> dict:
    """Each held-out language added with every --init-arms initialisation (and the default one) after 0 updates
    and after its updates (scores-init.json: {role: {arm: {"0": bits/char, "updates": bits/char}}})."""
    done = root / "scores-init.json"
    out = json.loads(done.read_text()) if done.is_file() else {}
    for role in ROLES:
        code, updates = plan.heldout[role], entry["roles"][role]["updates"]
        for arm in dict.fromkeys([DEFAULT_INIT, *s.init_arms]):
            method, _, flag = arm.partition(":")
            for n in (0, updates):
                key = "0" if n == 0 else "updates"
                if key in out.get(role, {}).get(arm, {}):
                    continue
                if arm == DEFAULT_INIT and n:  # the table's own run
                    bits = entry["roles"][role]["posthoc"]["bits_per_char"]
                else:
                    run_dir = root / f"add-{code}-init-{method}{'-nocopy' if flag else ''}-n{n}"
                    # 0 updates: one update at a learning rate that rounds to 0 in float32 (see run_sweep)
                    add_run(s, plan, root / "base", code, plan.init_from[role], run_dir, max(n, 1), seed,
                            f"{label} init {arm} {role} {code}, {n} updates", lr=None if n else 1e-300,
                            embed_init=method, copy_rows=not flag)
                    bits = scorer.posthoc(run_dir, code)["bits_per_char"]
                out.setdefault(role, {}).setdefault(arm, {})[key] = bits
                report.write_json(done, out)
    return out


def joint_vocab_arm(s: AdditionSettings, plan: Plan, seed: int, steps: int, tokenizers: dict[str, Path],
                    scorer: Scorer, entry: dict, label: str, root: Path) -> dict:
    """Post hoc on a base model pre-trained on the k languages with the joint tokenizer (scores-joint-vocab.json)."""
    done = root / "scores-joint-vocab.json"
    if done.is_file():
        return json.loads(done.read_text())
    k = len(plan.order)
    base = root / "base-joint-vocab"
    pretrain_run(s, plan, plan.order, tokenizers["joint"], base, k * steps, seed,
                 f"{label} base with the joint tokenizer: X-Mod on {k} languages, {k * steps} steps")
    base_model = XmodForMaskedLM.from_pretrained(base)
    out = {}
    for role in ROLES:
        code, updates = plan.heldout[role], entry["roles"][role]["updates"]
        run_dir = root / f"add-joint-vocab-{code}"
        added = add_run(s, plan, base, code, plan.init_from[role], run_dir, updates, seed,
                        f"{label} add {role} {code} post hoc to the joint-tokenizer base, {updates} updates")
        post = scorer.posthoc(run_dir, code, base_model, arm="joint")
        ref = entry["roles"][role]["joint"]
        out[role] = {"code": code, "updates": updates, "add": added, "posthoc": post,
                     "ratio": ratio(post["bits_per_char"], ref["bits_per_char"])}
        print(f"{label} {role} {code} with the joint tokenizer: bits/char post hoc {post['bits_per_char']:.3f}, "
              f"joint {ref['bits_per_char']:.3f}, ratio {out[role]['ratio']:.3f}", flush=True)
    report.write_json(done, out)
    return out


def _run_scale(s: AdditionSettings, plan: Plan, seed: int, steps: int, tokenizers: dict[str, Path], scorer: Scorer,
               counter: UpdateCounter, label: str, root: Path) -> dict:
    k, held = len(plan.order), [plan.heldout[r] for r in ROLES]
    base = pretrain_run(s, plan, plan.order, tokenizers["base"], root / "base", k * steps, seed,
                        f"{label} base: X-Mod on {k} languages, {k * steps} steps")
    joint = pretrain_run(s, plan, plan.order + held, tokenizers["joint"], root / "joint", (k + 3) * steps, seed,
                         f"{label} joint: X-Mod on {k} + {', '.join(held)}, {(k + 3) * steps} steps")
    counted = counter(root / "joint", (k + 3) * steps) or {}
    joint["updates"] = counted.get("updates")
    base_model = XmodForMaskedLM.from_pretrained(root / "base")
    entry: dict[str, Any] = {"seed": seed, "steps_per_language": steps, "base": base, "joint": joint, "roles": {}}
    for role in ROLES:
        code = plan.heldout[role]
        updates = (joint["updates"] or {}).get(code, steps)
        added = add_run(s, plan, root / "base", code, plan.init_from[role], root / f"add-{code}", updates, seed,
                        f"{label} add {role} {code} post hoc, {updates} updates")
        post = scorer.posthoc(root / f"add-{code}", code, base_model)
        ref = scorer.joint(root / "joint", code)
        entry["roles"][role] = {"code": code, "updates": updates, "add": added, "posthoc": post, "joint": ref,
                                "ratio": ratio(post["bits_per_char"], ref["bits_per_char"])}
        print(f"{label} {role} {code}: bits/char post hoc {post['bits_per_char']:.3f}, joint "
              f"{ref['bits_per_char']:.3f}, per-char perplexity ratio {entry['roles'][role]['ratio']:.3f}; old "
              f"languages identical: {post['old_identical']['encoder_outputs']}", flush=True)
    report.write_json(root / "scores.json", entry)
    return entry


def run_sweep(s: AdditionSettings, plan: Plan, seed: int, tokenizers: dict[str, Path], scorer: Scorer) -> dict:
    """add-language's learning rate x updates (and warm-up) on one language outside the table."""
    code = s.sweep_language
    scale = s.sweep_scale or sorted(s.steps_per_language)[len(s.steps_per_language) // 2]
    base = Path(s.out_dir) / f"seed{seed}" / f"steps{scale}" / "base"
    if not (base / "results.json").is_file():
        pretrain_run(s, plan, plan.order, tokenizers["base"], base, len(plan.order) * scale, seed,
                     f"sweep: base at {scale} steps per language")
    default = add_language.AddLanguageSettings()
    grid = [(lr, default.warmup_ratio, n) for lr in s.sweep_lrs for n in s.sweep_steps]
    grid += [(s.sweep_warmup_lr, w, n) for w in s.sweep_warmups for n in s.sweep_steps if n]
    init = [s.sweep_init_from or plan.order[0]]
    rows = []
    for i, (lr, warmup, n) in enumerate(grid, 1):
        name = f"add-{code}-lr{lr:g}-w{warmup:g}-n{n}"
        run_dir = Path(s.out_dir) / "sweep" / f"seed{seed}-steps{scale}" / name
        score_path = run_dir / "scores.json"
        if not score_path.is_file():
            # 0 updates: one update at a learning rate that rounds to 0 in float32 (learning rates must be > 0)
            # leaves every weight where the initialisation put it.
            add_run(s, plan, base, code, init, run_dir, max(n, 1), seed, f"sweep [{i}/{len(grid)}] {name}",
                    lr=lr if n else 1e-300, warmup=warmup)
            report.write_json(score_path, scorer.posthoc(run_dir, code))
        rows.append({"lr": lr, "warmup_ratio": warmup, "updates": n, **json.loads(score_path.read_text())})
    return {"language": code, "seed": seed, "scale": scale, "init_from": init, "runs": rows,
            "default_lr": default.lr, "default_warmup_ratio": default.warmup_ratio}


def run(s: AdditionSettings) -> dict:
    _check(s)
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_saved(out / "settings.json",
                 {k: v for k, v in dataclasses.asdict(s).items() if k not in _FREE_SETTINGS}, "settings")
    started = time.perf_counter()
    plan = make_plan(s)
    _check_saved(out / "plan.json", {"order": plan.order, "heldout": plan.heldout, "init_from": plan.init_from},
                 "languages")
    print(f"addition experiment: pre-training {plan.order} ({plan.rule}); held out {plan.heldout}; module init "
          f"{ {r: '+'.join(c) for r, c in plan.init_from.items()} }; scales {s.steps_per_language}, seeds {s.seeds}",
          flush=True)
    held = [plan.heldout[r] for r in ROLES]
    sweep = None
    per_seed: dict[int, tuple] = {}

    def seed_state(seed: int) -> tuple:
        if seed not in per_seed:
            sdir = out / f"seed{seed}"
            tokenizers = {"base": _tokenizer(s, plan, plan.order, sdir / "tokenizer-base", seed),
                          "joint": _tokenizer(s, plan, plan.order + held, sdir / "tokenizer-joint", seed)}
            per_seed[seed] = (tokenizers, Scorer(s, plan, seed, tokenizers),
                              UpdateCounter(tokenizers["joint"], {c: plan.corpora[c] for c in plan.order + held}))
        return per_seed[seed]

    # Scales outer, seeds inner: an interrupted session has every seed at the smaller scales.
    for steps in sorted(s.steps_per_language):
        for seed in s.seeds:
            tokenizers, scorer, counter = seed_state(seed)
            run_scale(s, plan, seed, steps, tokenizers, scorer, counter, f"[seed {seed}, {steps} steps/language]")
    if s.sweep_language:
        tokenizers, scorer, _ = seed_state(s.seeds[0])
        sweep = run_sweep(s, plan, s.seeds[0], tokenizers, scorer)
    results = collect(s, plan, out)
    if sweep is not None:  # one file per swept language; every one found goes into the report
        report.write_json(out / f"sweep-{sweep['language']}.json", sweep)
    results["sweeps"] = [json.loads(p.read_text()) for p in sorted(out.glob("sweep-*.json"))]
    results["wall_s_this_invocation"] = time.perf_counter() - started
    report.publish(out, results, render_report(results), plot)
    return results


def collect(s: AdditionSettings, plan: Plan, out: Path) -> dict:
    """Every scored (seed, scale) under ``out``, whichever invocation ran it, and the summary over seeds."""
    entries = []
    for path in sorted(out.glob("seed*/steps*/scores.json")):
        entry = json.loads(path.read_text())
        jv = path.with_name("scores-joint-vocab.json")
        if jv.is_file():
            entry["joint_vocab"] = json.loads(jv.read_text())
        init = path.with_name("scores-init.json")
        if init.is_file():
            entry["inits"] = json.loads(init.read_text())
        all_rows = path.with_name("scores-all-rows.json")
        if all_rows.is_file():
            entry["all_rows"] = json.loads(all_rows.read_text())
        entries.append(entry)
    summary: dict[str, dict[str, dict]] = {}
    for role in ROLES:
        for steps in sorted({e["steps_per_language"] for e in entries}):
            rows = [e for e in entries if e["steps_per_language"] == steps]
            get = lambda f: [f(e["roles"][role]) for e in rows]  # noqa: E731
            summary.setdefault(role, {})[str(steps)] = {
                "seeds": [e["seed"] for e in rows],
                "ratio": _stats(get(lambda r: r["ratio"])),
                "bits_posthoc": _stats(get(lambda r: r["posthoc"]["bits_per_char"])),
                "bits_joint": _stats(get(lambda r: r["joint"]["bits_per_char"])),
                "bits_posthoc_full_softmax": _stats(get(lambda r: r["posthoc"].get("bits_per_char_full_softmax"))),
                "ratio_all_rows": _stats([2.0 ** (e["all_rows"][role] - e["roles"][role]["joint"]["bits_per_char"])
                                          for e in rows if role in e.get("all_rows", {})]),
                "ratio_own_pieces": _stats(get(lambda r: 2.0 ** (r["posthoc"]["bits_per_char"]
                                                                - r["joint"]["bits_per_char_own_pieces"])
                                               if "bits_per_char_own_pieces" in r["joint"] else None)),
                "chars_per_piece_posthoc": _stats(get(lambda r: r["posthoc"]["chars_per_piece"])),
                "chars_per_piece_joint": _stats(get(lambda r: r["joint"]["chars_per_piece"])),
                "ppl_seen_posthoc": _stats(get(lambda r: r["posthoc"]["ppl_seen"])),
                "ppl_seen_joint": _stats(get(lambda r: r["joint"]["ppl_seen"])),
                "ppl_unseen_posthoc": _stats(get(lambda r: r["posthoc"]["ppl_unseen"])),
                "ppl_unseen_joint": _stats(get(lambda r: r["joint"]["ppl_unseen"])),
                "unseen_share_posthoc": _stats(get(lambda r: r["posthoc"]["unseen_share"])),
                "unseen_share_joint": _stats(get(lambda r: r["joint"]["unseen_share"])),
                "unk_posthoc": _stats(get(lambda r: r["posthoc"]["unk_rate"])),
                "unk_joint": _stats(get(lambda r: r["joint"]["unk_rate"])),
                "old_identical": all(r["posthoc"]["old_identical"]["encoder_outputs"] for r in get(lambda r: r)),
                "old_clean_identical": all(r["posthoc"]["old_identical"]["clean_encoder_outputs"]
                                           for r in get(lambda r: r)),
                "old_clean_share": _stats(get(lambda r: r["posthoc"]["old_identical"]["clean_sequences"]
                                              / max(r["posthoc"]["old_identical"]["sequences"], 1))),
                "old_mlm_identical": all(r["posthoc"]["old_identical"]["mlm_loss"] for r in get(lambda r: r)),
            }
            inits = [e["inits"][role] for e in rows if role in e.get("inits", {})]
            if inits:
                arms = {arm for r in inits for arm in r}
                summary[role][str(steps)]["inits"] = {
                    arm: {key: _stats([r[arm].get(key) for r in inits if arm in r]) for key in ("0", "updates")}
                    for arm in sorted(arms)}
            jv = [e["joint_vocab"][role] for e in rows if "joint_vocab" in e]
            if jv:
                summary[role][str(steps)]["joint_vocab"] = {
                    "seeds": [e["seed"] for e in rows if "joint_vocab" in e],
                    "ratio": _stats([r["ratio"] for r in jv]),
                    "bits_posthoc": _stats([r["posthoc"]["bits_per_char"] for r in jv]),
                    "ppl_seen_posthoc": _stats([r["posthoc"]["ppl_seen"] for r in jv]),
                    "ppl_unseen_posthoc": _stats([r["posthoc"]["ppl_unseen"] for r in jv]),
                    "unseen_share_posthoc": _stats([r["posthoc"]["unseen_share"] for r in jv]),
                    "old_clean_identical": all(r["posthoc"]["old_identical"]["clean_encoder_outputs"] for r in jv),
                }
    return {"settings": dataclasses.asdict(s), "order": plan.order, "rule": plan.rule, "heldout": plan.heldout,
            "init_from": plan.init_from, "language_info": plan.info, "runs": entries, "summary": summary}


def _stats(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


# ---------------------------------------------------------------------------------------------------------------
# Report


def _fmt(st: dict | None, digits: int = 3) -> str:
    if st is None:
        return "–"
    if st["n"] == 1:
        return f"{st['mean']:.{digits}f}"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f}"


def _table(results: dict) -> str:
    header = ["held-out language", "steps/lang", "seeds", "bits/char post hoc", "bits/char joint",
              "ppl/char ratio (min-max)", "ratio, both softmaxes over the language's pieces",
              "ratio, trained and scored over all rows",
              "bits/char post hoc, softmax over all rows", "chars/piece post / joint",
              "seen ppl post / joint", "unseen ppl post / joint", "unseen share post / joint", "<unk> post / joint",
              "old identical: all / clean (share)"]
    rows = []
    for role in ROLES:
        code = results["heldout"][role]
        for steps, st in sorted(results["summary"].get(role, {}).items(), key=lambda kv: int(kv[0])):
            r = st["ratio"]
            rows.append([f"{role}: {code}", int(steps), len(st["seeds"]), _fmt(st["bits_posthoc"]),
                         _fmt(st["bits_joint"]), f"{_fmt(r)} ({r['min']:.3f}-{r['max']:.3f})",
                         _fmt(st.get("ratio_own_pieces")), _fmt(st.get("ratio_all_rows")),
                         _fmt(st.get("bits_posthoc_full_softmax")),
                         f"{_fmt(st.get('chars_per_piece_posthoc'), 2)} / {_fmt(st.get('chars_per_piece_joint'), 2)}",
                         f"{_fmt(st['ppl_seen_posthoc'], 0)} / {_fmt(st['ppl_seen_joint'], 0)}",
                         f"{_fmt(st['ppl_unseen_posthoc'], 0)} / {_fmt(st['ppl_unseen_joint'], 0)}",
                         f"{st['unseen_share_posthoc']['mean']:.1%} / {st['unseen_share_joint']['mean']:.1%}",
                         f"{st['unk_posthoc']['mean']:.2%} / {st['unk_joint']['mean']:.2%}",
                         f"{'yes' if st['old_identical'] else 'no'} / {'yes' if st['old_clean_identical'] else 'NO'} "
                         f"({st['old_clean_share']['mean']:.0%})"])
    return report.markdown_table(header, rows, align="lrrrrrrrrrrrrrl")


def _joint_vocab_table(results: dict) -> str | None:
    header = ["held-out language", "steps/lang", "seeds", "bits/char post hoc (joint tokenizer)", "bits/char joint",
              "ppl/char ratio (min-max)", "seen ppl post", "unseen ppl post", "unseen share post", "old identical (clean)"]
    rows = []
    for role in ROLES:
        code = results["heldout"][role]
        for steps, st in sorted(results["summary"].get(role, {}).items(), key=lambda kv: int(kv[0])):
            jv = st.get("joint_vocab")
            if not jv:
                continue
            r = jv["ratio"]
            joint = _stats([e["roles"][role]["joint"]["bits_per_char"] for e in results["runs"]
                            if e["steps_per_language"] == int(steps) and "joint_vocab" in e])
            rows.append([f"{role}: {code}", int(steps), len(jv["seeds"]), _fmt(jv["bits_posthoc"]), _fmt(joint),
                         f"{_fmt(r)} ({r['min']:.3f}-{r['max']:.3f})", _fmt(jv["ppl_seen_posthoc"], 0),
                         _fmt(jv["ppl_unseen_posthoc"], 0), f"{jv['unseen_share_posthoc']['mean']:.1%}",
                         "yes" if jv["old_clean_identical"] else "NO"])
    return report.markdown_table(header, rows, align="lrrrrrrrrl") if rows else None


def _init_table(results: dict) -> str | None:
    header = ["held-out language", "steps/lang", "initialisation", "seeds", "bits/char at 0 updates",
              "bits/char after", "ppl/char ratio to from the start"]
    rows = []
    for role in ROLES:
        code = results["heldout"][role]
        for steps, st in sorted(results["summary"].get(role, {}).items(), key=lambda kv: int(kv[0])):
            for arm, arm_st in st.get("inits", {}).items():
                after = arm_st["updates"]
                ratio_ = None if after is None else 2.0 ** (after["mean"] - st["bits_joint"]["mean"])
                name = arm.replace(":nocopy", ", no copies") + (", copies of shared rows" if ":" not in arm else "")
                rows.append([f"{role}: {code}", int(steps), name + (" (default)" if arm == DEFAULT_INIT else ""),
                             (after or {}).get("n", 0), _fmt(arm_st["0"]), _fmt(after),
                             "–" if ratio_ is None else f"{ratio_:.3f}"])
    return report.markdown_table(header, rows, align="lrlrrrr") if rows else None


def _sweep_table(sweep: dict) -> str:
    header = ["lr", "warm-up", "updates", "bits/char", "ppl (all pieces)", "ppl seen", "ppl unseen", "unseen share"]
    rows = [[f"{r['lr']:g}", f"{r['warmup_ratio']:g}", r["updates"], r["bits_per_char"], r["ppl"], r["ppl_seen"],
             r["ppl_unseen"], f"{r['unseen_share']:.1%}"] for r in sweep["runs"]]
    return report.markdown_table(header, rows, digits=3)


def render_report(results: dict) -> str:
    s = results["settings"]
    info = results["language_info"]
    describe = lambda c: f"{c} ({info.get(c, {}).get('family', '?')}, {info.get(c, {}).get('script', '?')})"  # noqa
    inits = {r: "+".join(c) if len(c) == 1 else f"average of the {len(c)}" for r, c in results["init_from"].items()}
    shape = s["preset"] + "".join(f", {k}={s[k]}" for k in ("hidden_size", "num_hidden_layers",
                                                             "adapter_reduction_factor") if s[k] is not None)
    adds = [r["add"] for e in results["runs"] for r in e["roles"].values()]
    lrs = sorted({a["lr"] for a in adds})
    warmups = sorted({a["warmup_ratio"] for a in adds})
    lines = [
        "# Adding a language post hoc against pre-training it from the start", "",
        f"Data: `{s['data']}`. Pre-training languages ({results['rule']}): "
        f"{', '.join(describe(c) for c in results['order'])}.",
        "Held out: " + "; ".join(f"{r}: {describe(c)}, modules from {inits[r]}" for r, c in results["heldout"].items())
        + ".",
        f"Model: {shape}; seq_len {s['seq_len']}, batch {s['batch_size']}, pre-training lr {s['lr']:g}; tokenizers "
        f"of {s['vocab_size']} pieces (base: the {len(results['order'])} languages; joint: with the 3 held-out ones); "
        "additions with add-language's defaults at the time they ran: peak lr "
        + "/".join(f"{x:g}" for x in lrs) + ", warm-up " + "/".join(f"{x:g}" for x in warmups) + ", vocabulary "
        + "/".join(sorted({str(a.get("vocabulary") or "extend") for a in adds})) + " (own: a tokenizer of the "
        "language's own and rows of its own, its softmax over them; extend: the base tokenizer, pieces appended for "
        "new characters).",
        "Each held-out language gets the same updates post hoc as it got in the joint run. Score on the last "
        f"{s['valid_lines']} lines: bits per character of the masked pieces (the arms tokenise differently); ratio = "
        "post-hoc / joint perplexity per character = 2^(bits post - bits joint), mean ± standard deviation over "
        "seeds (min-max). Seen pieces occur in the pre-training languages' training text under that arm's "
        "tokenizer. Old identical: encoder outputs of every pre-training language (one validation batch each) "
        "bit-identical between the base model and the model with the language added, on all sequences / on the "
        "sequences without a never-drawn piece that the addition trained (their share). \"Softmax over all rows\": "
        "the post-hoc model scored with its language's softmax spanning every row, as transformers' XmodForMaskedLM "
        "scores it (it was trained with a softmax over its own rows only). \"Both softmaxes over the language's "
        "pieces\": the joint model's softmax kept, like the own vocabulary's, to the pieces its tokenizer makes of "
        "the language's training text (a like-with-like control). \"Trained and scored over all rows\" (--all-rows-arm): "
        "the addition made with add-language --no-own-softmax. Chars/piece: how coarse each arm's "
        "tokenisation of the language is (masking finer pieces leaves more of a word visible).", "",
        _table(results), "",
    ]
    jv = _joint_vocab_table(results)
    if jv:
        lines += ["## Post hoc with the joint tokenizer", "",
                  "The same additions, to a base model pre-trained on the same k languages and updates but with the "
                  "joint run's tokenizer (trained with the held-out languages too, as XLM-R's vocabulary covers the "
                  "languages the paper adds): the remaining gap is the frozen model's, not the vocabulary's. The "
                  "pieces only the held-out language uses are never-seen rows, which the addition trains.", "",
                  jv, ""]
    inits = _init_table(results)
    if inits:
        lines += ["## Initialisation of the added rows", "",
                  "The same additions with other initialisations of the language's rows (--embed-init for the "
                  "rows that do not start as copies; \"no copies\": none does), scored after 0 updates (the "
                  "initialisation alone: one update at learning rate 0) and after the same updates as the table. "
                  "Ratio: 2^(bits after - mean bits from the start).", "", inits, ""]
    for sweep in results.get("sweeps", []):
        lines += [f"## add-language sweep on {sweep['language']} (seed {sweep['seed']}, base at {sweep['scale']} "
                  f"steps per language, modules from {'+'.join(sweep['init_from'])})", "",
                  "0 updates: the initialisation alone (one update at learning rate 0).", "",
                  _sweep_table(sweep), ""]
    lines.append(f"Wall time of this invocation: {results['wall_s_this_invocation']:.0f} s (runs finished before "
                 "are skipped and not counted).")
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> Path | None:
    summary = results["summary"]
    scales = sorted({int(k) for role in summary.values() for k in role})
    if not scales:
        return None
    series, styles = {}, {}
    for i, role in enumerate(ROLES):
        code, color = results["heldout"][role], f"C{i}"
        st = [summary.get(role, {}).get(str(n), {}).get("ratio") for n in scales]
        series[f"{role}: {code} (mean)"] = [x["mean"] if x else None for x in st]
        styles[f"{role}: {code} (mean)"] = {"color": color, "marker": "o"}
        for end in ("min", "max"):
            series[f"{role} {end}"] = [x[end] if x else None for x in st]
            styles[f"{role} {end}"] = {"color": color, "linestyle": ":", "alpha": 0.6}
        own = [summary.get(role, {}).get(str(n), {}).get("ratio_own_pieces") for n in scales]
        if any(own):
            series[f"{role}, both softmaxes over its pieces"] = [x["mean"] if x else None for x in own]
            styles[f"{role}, both softmaxes over its pieces"] = {"color": color, "linestyle": "-.", "marker": "^"}
        jv = [summary.get(role, {}).get(str(n), {}).get("joint_vocab") for n in scales]
        if any(jv):
            series[f"{role}, joint tokenizer"] = [x["ratio"]["mean"] if x else None for x in jv]
            styles[f"{role}, joint tokenizer"] = {"color": color, "linestyle": "--", "marker": "s"}
    series["within 10%"] = [1.1] * len(scales)
    styles["within 10%"] = {"color": "gray", "linestyle": "--"}
    series["parity"] = [1.0] * len(scales)
    styles["parity"] = {"color": "black", "linewidth": 0.8, "marker": ""}
    return report.line_plot(out / "addition_ratio.png", scales, series,
                            title="Post hoc / from the start, per-character perplexity",
                            xlabel="updates per language", ylabel="ratio (1 = no gap)", styles=styles, log2_x=True)
