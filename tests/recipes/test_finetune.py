"""Fine-tuning and zero-shot evaluation recipes, end to end on a tiny X-Mod checkpoint.

The checkpoint is a randomly initialised tiny XmodForMaskedLM (2 layers, width 32) for two synthetic languages,
syn00 and its relative syn38, with a tokenizer trained on synthetic corpora; syn57 (same family) is a language the
model lacks. Runs use one thread: on a shared 2-core machine that is several times faster for a model this small.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xmodlm import cli, settings
from xmodlm.config import preset
from xmodlm.model import XmodForMaskedLM, is_embedding_or_module_param
from xmodlm.recipes import evaluate as ev
from xmodlm.recipes import finetune as ft
from xmodlm.synthetic import SyntheticWorld
from xmodlm.tokenizer import save_tokenizer, train_tokenizer
from xmodlm.trainer import Trainer

# tests/recipes/test_finetune.py -> parents[3] is the folder that holds the checkout (and shared/).
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
LANGS = ["syn00", "syn38"]
MISSING = "syn57"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_checkpoint(directory: Path, corpora: dict[str, Path], languages: list[str], vocab_size: int) -> Path:
    tok = train_tokenizer(corpora, vocab_size=vocab_size, progress=False)
    torch.manual_seed(0)
    XmodForMaskedLM(preset("tiny", vocab_size=tok.get_vocab_size(), languages=languages)).save_pretrained(directory)
    save_tokenizer(tok, directory)
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    w = SyntheticWorld(0)
    corpora = w.write_corpora(root / "corpora", [*LANGS, MISSING], n_sentences=300)
    paths = {"root": root, "model": make_checkpoint(root / "pretrained", corpora, LANGS, vocab_size=400)}
    for code in [*LANGS, MISSING]:
        paths[f"nli-{code}"] = w.write_nli(root / f"nli-{code}.tsv", code, 48, seed=1)
        paths[f"ner-{code}"] = w.write_ner(root / f"ner-{code}.txt", code, 24, seed=1)
        paths[f"qa-{code}"] = w.write_qa(root / f"qa-{code}.json", code, 24, seed=1)
    return paths


def finetune(world, out: Path, **kw) -> dict:
    values = dict(model=str(world["model"]), task="nli", train=str(world["nli-syn00"]), source_lang="syn00",
                  out_dir=str(out), lr=1e-2, batch_size=8, warmup_ratio=0.0, tensorboard=False, log_every=1)
    values.update(kw)
    return ft.run(ft.FinetuneSettings(**values))


def evaluate(model_dir: Path, data: dict[str, Path], out: Path, **kw) -> dict:
    items = [f"{lang}={path}" for lang, path in data.items()]
    return ev.run(ev.EvaluateSettings(model=str(model_dir), data=items, out_dir=str(out), **kw))


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def nli_model(world) -> Path:
    """NLI fine-tuned on 24 syn00 pairs: 30 epochs of 3 batches (90 steps, about a second on one thread)."""
    out = world["root"] / "nli"
    finetune(world, out, train_limit=24, epochs=30, log_every=10, valid=str(world["nli-syn00"]))
    return out


# ---------------------------------------------------------------- fine-tuning


def test_finetune_writes_model_tokenizer_task_file_and_fits_the_source_language(world, nli_model, tmp_path):
    config = json.loads((nli_model / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert config["architectures"] == ["XmodForSequenceClassification"]
    assert (nli_model / "tokenizer.json").is_file() and (nli_model / "model.safetensors").is_file()
    info = json.loads((nli_model / "task.json").read_text())
    assert info["task"] == "nli" and info["source_lang"] == "syn00"
    assert info["labels"] == ["entailment", "neutral", "contradiction"]
    assert info["train_examples"] == 24 and info["max_steps"] == 90  # 30 epochs x ceil(24 / 8)
    assert info["settings"]["train_limit"] == 24 and info["metrics"]["step"] == 90
    assert 0 <= info["metrics"]["eval/accuracy"] <= 100  # --valid, scored at the end through syn00's module
    assert steps_logged(nli_model) == list(range(10, 91, 10))
    # Training data, source language: far above chance (33%) after 90 steps.
    results = evaluate(nli_model, {"syn00": world["nli-syn00"]}, tmp_path, eval_limit=24)
    assert results["languages"]["syn00"]["accuracy"] > 60


def test_protocol_freezes_embeddings_and_every_language_module(world, nli_model):
    before, after = load_file(world["model"] / "model.safetensors"), load_file(nli_model / "model.safetensors")
    frozen = [k for k in after if is_embedding_or_module_param(k)]
    trained = [k for k in after if k.startswith("roberta.encoder.") and k not in frozen]
    assert any(".adapter_modules.syn38." in k for k in frozen) and any(".embeddings." in k for k in frozen)
    for k in frozen:  # the source language's module too
        assert torch.equal(before[k], after[k]), k
    for k in trained:  # attention, feed-forward, every LayerNorm of the layers
        assert not torch.equal(before[k], after[k]), k
    assert {"classifier.dense.weight", "classifier.out_proj.weight"} <= set(after)
    assert not any(k.startswith("lm_head.") for k in after)


def test_full_finetune_trains_embeddings_and_modules(world, tmp_path):
    finetune(world, tmp_path, max_steps=2, full_finetune=True)
    before, after = load_file(world["model"] / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    key = "roberta.embeddings.word_embeddings.weight"
    assert not torch.equal(before[key], after[key])
    module = "roberta.encoder.layer.0.output.adapter_modules.syn00.dense1.weight"
    assert not torch.equal(before[module], after[module])
    assert json.loads((tmp_path / "task.json").read_text())["trainable_parameters"] == sum(
        t.numel() for t in after.values())


@pytest.mark.parametrize("task", ["nli", "ner", "qa"])
def test_bf16_finetune_on_padded_batches_trains(world, tmp_path, task):
    """--precision bf16 on CPU (autocast) with the padding every task batch has: it crashed in the
    attention mask before (float32's minimum does not fit bf16 scores)."""
    finetune(world, tmp_path, max_steps=2, precision="bf16", task=task, train=str(world[f"{task}-syn00"]))
    after = load_file(tmp_path / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in after.values())
    assert json.loads((tmp_path / "task.json").read_text())["trainable_parameters"] > 0


def test_unknown_source_language_names_the_model_languages(world, tmp_path):
    with pytest.raises(ValueError, match=r"'syn57' is not one of the model's languages \['syn00', 'syn38'\]"):
        finetune(world, tmp_path, source_lang=MISSING, max_steps=1)
    assert not (tmp_path / "checkpoint").exists()


def test_cli_flags_and_user_errors(world, tmp_path, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["finetune", "--model", "m", "--task", "ner", "--train", "t.txt", "--out", "o",
                              "--source-lang", "de_DE", "--train-range", "0:30", "--full-finetune", "--lr", "3e-5"])
    s = settings.from_args(ft.FinetuneSettings, args)
    assert (s.out_dir, s.source_lang, s.train_range, s.full_finetune, s.lr) == ("o", "de_DE", "0:30", True, 3e-5)
    assert (s.batch_size, s.epochs, s.max_steps, s.betas, s.eps, s.weight_decay, s.warmup_ratio) == (
        32, 5.0, None, (0.9, 0.98), 1e-6, 0.01, 0.06)  # fairseq's NLI recipe
    args = parser.parse_args(["evaluate", "--model", "m", "--data", "de_DE=a.tsv,th_TH=b.tsv", "--out", "r.json"])
    assert settings.from_args(ev.EvaluateSettings, args).data == ["de_DE=a.tsv", "th_TH=b.tsv"]
    args = parser.parse_args(["evaluate", "--model", "m", "--data", "de_DE=a.tsv", "--data", "th_TH=b.tsv"])
    assert settings.from_args(ev.EvaluateSettings, args).data == ["de_DE=a.tsv", "th_TH=b.tsv"]

    code = cli.main(["finetune", "--model", str(world["model"]), "--train", str(world["nli-syn00"]),
                     "--out", str(tmp_path / "x"), "--source-lang", "en_XX"])
    assert code == 1 and "'en_XX' is not one of the model's languages" in capsys.readouterr().err
    code = cli.main(["evaluate", "--model", str(world["model"]), "--task", "nli", "--out", str(tmp_path / "y"),
                     "--data", f"syn00={world['nli-syn00']}"])
    assert code == 1 and "no trained nli head" in capsys.readouterr().err  # a pre-trained MLM, not fine-tuned


# ---------------------------------------------------------------- evaluation


def test_evaluate_zero_shot_writes_results_table_and_predictions(world, nli_model, tmp_path, capsys):
    results = evaluate(nli_model, {"syn00": world["nli-syn00"], "syn38": world["nli-syn38"]}, tmp_path)
    table = capsys.readouterr().out
    assert re.search(r"^syn38\s+syn38\s+48\s+\d+\.\d\d$", table, re.M)
    assert re.search(r"^average\s+\d+\.\d\d$", table, re.M)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert saved["task"] == "nli" and saved["metrics"] == ["accuracy"] and list(saved["languages"]) == LANGS
    rows = saved["languages"]
    assert saved["average"]["accuracy"] == pytest.approx((rows["syn00"]["accuracy"] + rows["syn38"]["accuracy"]) / 2)
    for lang in LANGS:
        assert rows[lang]["module"] == lang and rows[lang]["examples"] == 48
        lines = Path(rows[lang]["predictions"]).read_text().splitlines()
        assert len(lines) == 48 and set(lines) <= {"entailment", "neutral", "contradiction"}
        scored = ev.score(ev.ScoreSettings(task="nli", data=str(world[f"nli-{lang}"]),
                                           predictions=rows[lang]["predictions"]))
        assert scored["accuracy"] == rows[lang]["accuracy"]
        assert capsys.readouterr().out.startswith(f"accuracy {scored['accuracy']:.2f}  (48 examples")
    # predictions of part of a file: the error points at --eval-range / --eval-limit
    with pytest.raises(ValueError, match="48 predictions for 20 reference examples.*--eval-range START:END.*this run: --eval-limit 20"):
        ev.score(ev.ScoreSettings(task="nli", data=str(world["nli-syn00"]), predictions=rows["syn00"]["predictions"],
                                  eval_limit=20))


def test_unknown_target_language_errors_and_fallbacks(world, nli_model, tmp_path):
    data = {MISSING: world[f"nli-{MISSING}"]}
    with pytest.raises(ValueError, match=r"no module for 'syn57'; its languages: \['syn00', 'syn38'\]"):
        evaluate(nli_model, data, tmp_path)
    with pytest.raises(ValueError, match="--fallback 'xx_XX' is neither 'closest' nor one of the model's"):
        evaluate(nli_model, data, tmp_path, fallback="xx_XX")
    # syn codes have no ISO relatives: closest falls back to the language with id 0.
    closest = evaluate(nli_model, data, tmp_path / "closest", fallback="closest")["languages"][MISSING]
    named = evaluate(nli_model, data, tmp_path / "named", fallback="syn38")["languages"][MISSING]
    own = evaluate(nli_model, {"syn38": world[f"nli-{MISSING}"]}, tmp_path / "own")["languages"]["syn38"]
    assert closest["module"] == "syn00" and named["module"] == "syn38"
    assert named["accuracy"] == own["accuracy"]  # the same file through the same module


def test_ner_end_to_end(world, tmp_path):
    out = tmp_path / "ner"
    finetune(world, out, task="ner", train=str(world["ner-syn00"]), max_steps=6)
    info = json.loads((out / "task.json").read_text())
    assert info["labels"] == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    assert json.loads((out / "config.json").read_text())["id2label"]["5"] == "B-LOC"
    results = evaluate(out, {"syn38": world["ner-syn38"]}, tmp_path / "eval")  # task from task.json
    row = results["languages"]["syn38"]
    assert results["task"] == "ner" and {"precision", "recall", "f1"} <= set(row)
    predicted = Path(row["predictions"]).read_text().split("\n\n")
    assert len([s for s in predicted if s.strip()]) == 24
    scored = ev.score(ev.ScoreSettings(task="ner", data=str(world["ner-syn38"]), predictions=row["predictions"]))
    assert scored == {k: row[k] for k in ("precision", "recall", "f1")}


def official_squad_v11(dataset: list, predictions: dict) -> dict:
    """The SQuAD v1.1 evaluation script (evaluate-v1.1.py from the SQuAD release), transcribed as a reference."""

    def normalize_answer(s):
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1_score(prediction, ground_truth):
        prediction_tokens, ground_truth_tokens = normalize_answer(prediction).split(), normalize_answer(
            ground_truth).split()
        num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
        if num_same == 0:
            return 0
        precision, recall = 1.0 * num_same / len(prediction_tokens), 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                truths = [a["text"] for a in qa["answers"]]
                exact_match += max(normalize_answer(predictions[qa["id"]]) == normalize_answer(t) for t in truths)
                f1 += max(f1_score(predictions[qa["id"]], t) for t in truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def test_qa_end_to_end_and_score_equals_evaluate_and_the_official_script(world, tmp_path, capsys):
    out = tmp_path / "qa"
    finetune(world, out, task="qa", train=str(world["qa-syn00"]), max_steps=6)
    info = json.loads((out / "task.json").read_text())
    assert (info["max_length"], info["stride"]) == (128, 42)  # capped by the tiny model's 130 positions
    results = evaluate(out, {"syn00": world["qa-syn00"], "syn38": world["qa-syn38"]}, tmp_path / "r.json")
    assert (tmp_path / "r.json").is_file() and (tmp_path / "predictions" / "syn38.json").is_file()
    for lang in LANGS:
        row = results["languages"][lang]
        predictions = json.loads(Path(row["predictions"]).read_text())
        assert len(predictions) == 24 and all(isinstance(v, str) for v in predictions.values())
        capsys.readouterr()
        scored = ev.score(ev.ScoreSettings(task="qa", data=str(world[f"qa-{lang}"]), predictions=row["predictions"],
                                           json=True))
        assert json.loads(capsys.readouterr().out) == scored
        assert scored == {"exact_match": row["exact_match"], "f1": row["f1"]}
        official = official_squad_v11(json.loads(world[f"qa-{lang}"].read_text())["data"], predictions)
        assert scored == pytest.approx(official, abs=1e-9)
        # Every gold answer predicted: 100 / 100, whatever the model.
        gold = {qa["id"]: qa["answers"][0]["text"] for a in json.loads(world[f"qa-{lang}"].read_text())["data"]
                for p in a["paragraphs"] for qa in p["qas"]}
        (tmp_path / "gold.json").write_text(json.dumps(gold, ensure_ascii=False))
        assert ev.score(ev.ScoreSettings(task="qa", data=str(world[f"qa-{lang}"]),
                                         predictions=str(tmp_path / "gold.json"))) == {"exact_match": 100.0,
                                                                                        "f1": 100.0}
    with pytest.raises(ValueError, match="MLQA normalisation knows"):
        evaluate(out, {"syn00": world["qa-syn00"]}, tmp_path / "mlqa", qa_normalization="mlqa")


# ---------------------------------------------------------------- data order and resume


def test_task_batches_shuffle_per_epoch_and_resume_exactly():
    features = [{"input_ids": [0, 10 + i, 2], "labels": i % 3} for i in range(10)]
    from xmodlm.tasks import nli

    def make():
        return ft.TaskBatches(features, nli.collate, batch_size=4, seed=3, lang_id=1)

    batches = make()
    assert batches.batches_per_epoch == 3
    epochs = [[row for _ in range(3) for row in next(batches)["input_ids"][:, 1].tolist()] for _ in range(2)]
    assert all(sorted(e) == list(range(10, 20)) for e in epochs) and epochs[0] != epochs[1]
    a = make()
    for _ in range(4):
        next(a)
    b = make()
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        x, y = next(a), next(b)
        assert all(torch.equal(x[k], y[k]) for k in x) and x["lang_ids"].tolist() == [1] * len(x["labels"])
    with pytest.raises(ValueError, match="other data"):
        ft.TaskBatches(features[:9], nli.collate, 4, 3, 1).load_state_dict(a.state_dict())


def test_select_by_index_range_and_limit():
    items = list(range(10))
    assert ev.select(items, "2:5", None, "train") == [2, 3, 4]
    assert ev.select(items, "7:", 2, "eval") == [7, 8]
    assert ev.select(items, None, 3, "eval") == [0, 1, 2]
    with pytest.raises(ValueError, match="--train-range '3-5'"):
        ev.select(items, "3-5", None, "train")
    with pytest.raises(ValueError, match="selects none of the 10"):
        ev.select(items, "20:", None, "eval")


def test_rerun_resumes_exactly_and_a_finished_run_is_not_repeated(world, tmp_path, monkeypatch):
    kw = dict(train_limit=20, max_steps=6, save_every=2)
    finetune(world, tmp_path / "straight", **kw)

    original = Trainer._train_step

    def killed_at_step_5(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        finetune(world, tmp_path / "resumed", **kw)
    assert steps_logged(tmp_path / "resumed") == [1, 2, 3, 4]
    monkeypatch.setattr(Trainer, "_train_step", original)
    finetune(world, tmp_path / "resumed", **kw)
    assert steps_logged(tmp_path / "resumed") == [1, 2, 3, 4, 5, 6]
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)  # data order, dropout and optimizer resumed

    finetune(world, tmp_path / "resumed", **kw)  # the same command again: nothing left to train
    assert steps_logged(tmp_path / "resumed") == [1, 2, 3, 4, 5, 6]
    assert json.loads((tmp_path / "resumed" / "task.json").read_text())["metrics"]["step"] == 6
    assert "loss" in json.loads((tmp_path / "resumed" / "task.json").read_text())["metrics"]
    finetune(world, tmp_path / "resumed", **{**kw, "max_steps": 8})  # more steps continue from step 6
    assert steps_logged(tmp_path / "resumed") == list(range(1, 9))


# ---------------------------------------------------------------- real benchmark files


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Path]:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA} (the shared data folder next to the checkout)")
    root = tmp_path_factory.mktemp("real")
    corpora = {}
    for code in ("en_XX", "de_DE"):
        corpora[code] = root / f"{code}.txt"
        lines = (DATA / "ntrex" / f"{code}.txt").read_text(encoding="utf-8").splitlines()[:300]
        corpora[code].write_text("\n".join(lines) + "\n", encoding="utf-8")
    # it_IT has a module but no tokenizer text: enough to route XCOPA through it.
    return {"model": make_checkpoint(root / "pretrained", corpora, ["en_XX", "de_DE", "it_IT"], vocab_size=1000)}


def test_xnli_dev_split_by_pair_index(real, tmp_path):
    """The paper-like experiment: fine-tune on English XNLI dev pairs 0:30, evaluate pairs 30:60 of en and de."""
    out = tmp_path / "xnli"
    ft.run(ft.FinetuneSettings(model=str(real["model"]), task="nli", train=str(DATA / "xnli" / "dev-en.tsv"),
                               train_range="0:30", source_lang="en_XX", out_dir=str(out), max_steps=3,
                               batch_size=10, lr=1e-3, tensorboard=False))
    assert json.loads((out / "task.json").read_text())["train_examples"] == 30
    data = {"en_XX": DATA / "xnli" / "dev-en.tsv", "de_DE": DATA / "xnli" / "dev-de.tsv"}
    results = evaluate(out, data, tmp_path / "eval", eval_range="30:60")
    assert [r["examples"] for r in results["languages"].values()] == [30, 30]
    scored = ev.score(ev.ScoreSettings(task="nli", data=str(data["de_DE"]), eval_range="30:60",
                                       predictions=results["languages"]["de_DE"]["predictions"]))
    assert scored["accuracy"] == results["languages"]["de_DE"]["accuracy"]
    with pytest.raises(ValueError, match="evaluate ran with --eval-range 30:60"):
        ev.score(ev.ScoreSettings(task="nli", data=str(data["de_DE"]),
                                  predictions=results["languages"]["de_DE"]["predictions"]))


def test_real_ner_and_xquad_slices(real, tmp_path):
    ner_out = tmp_path / "ner"
    ft.run(ft.FinetuneSettings(model=str(real["model"]), task="ner", train=str(DATA / "ner" / "dev-en.txt"),
                               train_limit=16, source_lang="en_XX", out_dir=str(ner_out), max_steps=2, batch_size=8,
                               lr=1e-3, tensorboard=False))
    results = evaluate(ner_out, {"de_DE": DATA / "ner" / "dev-de.txt"}, tmp_path / "ner-eval", eval_limit=16)
    assert results["languages"]["de_DE"]["examples"] == 16

    qa_out = tmp_path / "qa"
    ft.run(ft.FinetuneSettings(model=str(real["model"]), task="qa", train=str(DATA / "xquad" / "xquad.en.json"),
                               train_limit=8, source_lang="en_XX", out_dir=str(qa_out), max_steps=2, batch_size=8,
                               lr=1e-3, tensorboard=False))
    de = DATA / "xquad" / "xquad.de.json"
    results = evaluate(qa_out, {"de_DE": de}, tmp_path / "qa-eval", eval_limit=12, qa_normalization="mlqa")
    row = results["languages"]["de_DE"]
    assert len(json.loads(Path(row["predictions"]).read_text())) == 12
    scored = ev.score(ev.ScoreSettings(task="qa", data=str(de), predictions=row["predictions"], lang="de",
                                       eval_limit=12))
    assert scored == {"exact_match": row["exact_match"], "f1": row["f1"]}


def test_real_pos_and_xcopa_slices(real, tmp_path):
    pos_out = tmp_path / "pos"
    ft.run(ft.FinetuneSettings(model=str(real["model"]), task="pos", train=str(DATA / "udpos" / "dev-en.tsv"),
                               train_range="0:16", source_lang="en_XX", out_dir=str(pos_out), max_steps=2,
                               batch_size=8, lr=1e-3, tensorboard=False))
    assert json.loads((pos_out / "task.json").read_text())["labels"][:3] == ["ADJ", "ADP", "ADV"]
    en = DATA / "udpos" / "dev-en.tsv"
    row = evaluate(pos_out, {"en_XX": en}, tmp_path / "pos-eval", eval_range="16:32")["languages"]["en_XX"]
    scored = ev.score(ev.ScoreSettings(task="pos", data=str(en), predictions=row["predictions"], eval_range="16:32"))
    assert scored == {"accuracy": row["accuracy"]}

    mc_out = tmp_path / "mc"
    ft.run(ft.FinetuneSettings(model=str(real["model"]), task="mc", train=str(DATA / "xcopa" / "val.it.jsonl"),
                               train_limit=16, source_lang="it_IT", out_dir=str(mc_out), max_steps=2, batch_size=8,
                               lr=1e-3, tensorboard=False))
    data = {"it_IT": DATA / "xcopa" / "val.it.jsonl", "et_EE": DATA / "xcopa" / "val.et.jsonl"}
    results = evaluate(mc_out, data, tmp_path / "mc-eval", eval_range="16:40", fallback="closest")
    assert results["languages"]["et_EE"]["module"] in ("en_XX", "de_DE", "it_IT")
    row = results["languages"]["et_EE"]
    assert Path(row["predictions"]).read_text().split() != [] and row["examples"] == 24
    scored = ev.score(ev.ScoreSettings(task="mc", data=str(data["et_EE"]), predictions=row["predictions"],
                                       eval_range="16:40"))
    assert scored == {"accuracy": row["accuracy"]}
