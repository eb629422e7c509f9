"""Tasks as a registry: a task defined outside the package, registered here, runs through finetune, evaluate and
score like a built-in one; the recipes know no task by name.

The toy task is single-sentence classification ("polarity": does a synthetic hypothesis contradict its premise,
judged from the hypothesis alone), in its own file format: `label<TAB>text` a line. Everything it needs is in this
file, as a new task would be in its own module of xmodlm.tasks.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from xmodlm import metrics, tasks
from xmodlm.config import preset
from xmodlm.model import XmodForMaskedLM, XmodForSequenceClassification
from xmodlm.recipes import evaluate as ev
from xmodlm.recipes import finetune as ft
from xmodlm.synthetic import SyntheticWorld
from xmodlm.tasks import Setup, Task
from xmodlm.tokenizer import save_tokenizer, train_tokenizer

RECIPES = Path(__file__).resolve().parents[2] / "src" / "xmodlm" / "recipes"
LANGS = ["syn00", "syn38"]

# ---------------------------------------------------------------- the toy task: one record, nothing else

LABELS = ("negative", "positive")


def read(path: str | Path) -> list[tuple[str, int]]:
    """(text, label index) per `label<TAB>text` line."""
    examples = []
    for number, line in tasks.read_lines(path):
        label, sep, text = line.partition("\t")
        if not sep or label not in LABELS:
            raise tasks.format_error(path, number, f"label<TAB>text with a label in {LABELS}", line)
        examples.append((text, LABELS.index(label)))
    return examples


def featurize(examples: Sequence, tok: Tokenizer, max_length: int, setup: Setup) -> list[dict]:
    tok = tasks.prepare_tokenizer(tok)
    texts = tasks.encode_texts(tok, [text for text, _ in examples])
    return [{"input_ids": tasks.single(ids, max_length), "labels": label} for ids, (_, label) in zip(texts, examples)]


def collate(features: Sequence[dict]) -> dict[str, torch.Tensor]:
    batch = tasks.inputs([f["input_ids"] for f in features])
    batch["labels"] = torch.tensor([f["labels"] for f in features])
    return batch


POLARITY = Task(
    name="polarity",
    head=XmodForSequenceClassification,
    head_tensors=("classifier.out_proj.weight", "classifier.out_proj.bias"),
    max_length=64,
    metrics=("accuracy",),
    suffix=".txt",
    data_suffixes=(".tsv",),
    read=read,
    featurize=featurize,
    collate=collate,
    decode=lambda examples, features, outputs, setup: tasks.argmax(outputs),
    format=lambda predictions, examples: tasks.format_lines(predictions, LABELS),
    read_predictions=lambda path, examples: tasks.read_line_predictions(path, examples, LABELS),
    evaluate=lambda predictions, examples, setup: {
        "accuracy": metrics.accuracy(list(predictions), [label for _, label in examples])},
    label_list=lambda examples: list(LABELS),
)

# ---------------------------------------------------------------- fixtures


@pytest.fixture
def polarity():
    yield tasks.register(POLARITY)
    tasks.REGISTRY.pop(POLARITY.name, None)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    w = SyntheticWorld(0)
    corpora = w.write_corpora(root / "corpora", LANGS, n_sentences=200)
    tok = train_tokenizer(corpora, vocab_size=300, progress=False)
    torch.manual_seed(0)
    XmodForMaskedLM(preset("tiny", vocab_size=tok.get_vocab_size(), languages=LANGS)).save_pretrained(root / "pre")
    save_tokenizer(tok, root / "pre")
    paths = {"root": root, "model": root / "pre"}
    for code in LANGS:
        rows = w.nli_examples(code, 40, seed=1)
        paths[code] = root / f"polarity-{code}.tsv"
        paths[code].write_text("".join(f"{'negative' if label == 'contradiction' else 'positive'}\t{hypothesis}\n"
                                       for _, hypothesis, label in rows), encoding="utf-8")
    return paths


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- the registry


def test_register_adds_a_name_and_refuses_to_shadow_one(polarity):
    assert tasks.get("polarity") is POLARITY and tasks.names()[-1] == "polarity"
    assert tasks.names()[:len(tasks.BUILTIN)] == tasks.BUILTIN
    with pytest.raises(ValueError, match="'polarity' is already defined"):
        tasks.register(Task(**{**vars(POLARITY), "max_length": 32}))
    with pytest.raises(ValueError, match="'nli' is already defined"):
        tasks.register(Task(**{**vars(POLARITY), "name": "nli"}))
    assert tasks.register(POLARITY) is POLARITY  # the same record again is no change
    longer = tasks.register(Task(**{**vars(POLARITY), "max_length": 32}), replace=True)
    assert tasks.get("polarity") is longer
    tasks.register(POLARITY, replace=True)


def test_unknown_names_list_the_registered_tasks(polarity):
    with pytest.raises(ValueError, match="unknown task 'sst'; tasks are nli, ner, pos, qa, mc, retrieval, polarity"):
        tasks.get("sst")


def test_records_are_checked():
    with pytest.raises(ValueError, match="suffix 'txt' should start with a dot"):
        Task(**{**vars(POLARITY), "suffix": "txt"})
    with pytest.raises(ValueError, match="metrics must name"):
        Task(**{**vars(POLARITY), "metrics": ()})


# ---------------------------------------------------------------- the toy task through the recipes


def test_a_registered_task_runs_through_finetune_evaluate_and_score(world, polarity, tmp_path):
    out = tmp_path / "model"
    summary = ft.run(ft.FinetuneSettings(
        model=str(world["model"]), task="polarity", train=str(world["syn00"]), source_lang="syn00",
        out_dir=str(out), max_steps=12, batch_size=8, lr=1e-2, warmup_ratio=0.0, tensorboard=False,
        valid=str(world["syn00"])))
    info = json.loads((out / "task.json").read_text())
    assert info["task"] == "polarity" and info["labels"] == list(LABELS) and info["stride"] is None
    assert info["max_length"] == 64 and summary["train_examples"] == 40  # the task's default length
    assert 0 <= info["metrics"]["eval/accuracy"] <= 100
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["XmodForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    results = ev.run(ev.EvaluateSettings(model=str(out), data=[f"{lang}={world[lang]}" for lang in LANGS],
                                         out_dir=str(tmp_path / "eval")))  # the task from task.json
    assert results["task"] == "polarity" and results["metrics"] == ["accuracy"] and results["max_length"] == 64
    assert "stride" not in results and "qa_normalization" not in results
    for lang in LANGS:
        row = results["languages"][lang]
        assert row["module"] == lang and row["examples"] == 40 and 0 <= row["accuracy"] <= 100
        assert row["predictions"] == str(tmp_path / "eval" / "predictions" / f"{lang}.txt")
        lines = Path(row["predictions"]).read_text().splitlines()
        assert len(lines) == 40 and set(lines) <= set(LABELS)
        scored = ev.score(ev.ScoreSettings(task="polarity", data=str(world[lang]), predictions=row["predictions"]))
        assert scored == {"accuracy": row["accuracy"]}


def test_evaluate_checks_the_registered_head_tensors(world, polarity, tmp_path):
    with pytest.raises(ValueError, match=r"no trained polarity head \(classifier.out_proj.weight, "
                                         r"classifier.out_proj.bias\)"):
        ev.run(ev.EvaluateSettings(model=str(world["model"]), task="polarity", data=[f"syn00={world['syn00']}"],
                                   out_dir=str(tmp_path)))


# ---------------------------------------------------------------- the recipes know no task by name


def _string_comparisons(path: Path) -> list[str]:
    """String constants a file compares with == / != / in / not in."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                for const in ast.walk(operand):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        found.append(const.value)
    return found


@pytest.mark.parametrize("recipe", ["evaluate.py", "finetune.py", "predict.py"])
def test_recipes_do_not_branch_on_task_names(recipe):
    assert not set(_string_comparisons(RECIPES / recipe)) & set(tasks.BUILTIN)


def test_finetune_does_not_import_the_evaluate_recipe():
    tree = ast.parse((RECIPES / "finetune.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(m and ("evaluate" in m or m.startswith("recipes")) for m in imported)
    assert not any(isinstance(n, ast.ImportFrom) and n.level == 1 for n in ast.walk(tree))  # from . / from .x
