"""The demo command, run for real with --quick (a few steps of each stage), and its skip / resume logic."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from xmodlm.cli import main
from xmodlm.synthetic import SyntheticWorld

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("perplexity.png", "zero_shot.png", "training_loss.png", "validation_perplexity.png")
STAGE_FILES = ("data/results.json", "tokenizer/results.json", "pretrain-xmod/results.json",
               "pretrain-shared/results.json", "checks/results.json", "finetune-xmod/task.json",
               "finetune-shared/task.json", "eval-xmod/results.json", "eval-shared/results.json")


def stage_files(out: Path) -> dict[str, int]:
    """Modification times of every file the stages wrote (not the report): unchanged means nothing ran."""
    report_files = {"results.json", "report.md", "timings.json", *PLOTS}
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))
            if p.is_file() and str(p.relative_to(out)) not in report_files}


def stable(results: dict) -> dict:
    """results.json without what describes the invocation rather than the models."""
    return {k: v for k, v in results.items() if k != "stages_run_now"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    threads = torch.get_num_threads()
    start = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    seconds = time.perf_counter() - start
    assert torch.get_num_threads() == threads  # the demo runs on one thread (--threads 1) and gives the setting back
    return out, seconds


def test_writes_results_report_and_valid_pngs(demo):
    out, _ = demo
    results = json.loads((out / "results.json").read_text())
    # --quick: 3 pre-training languages (one family each); held out: the source language's closest relative.
    assert results["order"] == ["syn00", "syn01", "syn02"] and results["source_lang"] == "syn00"
    heldout = results["heldout"]
    assert results["init_from"] == "syn00" and heldout == SyntheticWorld(0).related("syn00")[0]
    assert results["task"]["name"] == "ner" and results["task"]["metric"] == "f1"
    assert list(results["languages"]) == ["syn00", "syn01", "syn02", heldout]
    for code, row in results["languages"].items():
        assert row["ppl"]["xmod"] > 1 and row["ppl"]["shared"] > 1
        assert 0 <= row["score"]["xmod"] <= 100 and 0 <= row["score"]["shared"] <= 100  # NER entity F1
        assert row["module"]["xmod"] == code  # X-Mod has a module for every language, the added one too
    assert results["languages"][heldout]["module"]["shared"] == "syn00"  # the one shared module serves it
    assert set(results["stages_run_now"]) == {"data", "tokenizer", "pretrain-xmod", "pretrain-shared", "add", "checks",
                                              "finetune-xmod", "finetune-shared", "eval-xmod", "eval-shared"}
    for name in STAGE_FILES:
        assert (out / name).is_file(), name

    text = (out / "report.md").read_text()
    assert "| language" in text and "ppl X-Mod" in text and "NER F1 X-Mod" in text and "NER F1 shared" in text
    assert results["precision"] in ("fp32", "bf16") and {"cpu", "cores", "torch"} <= set(results["machine"])
    assert f"training precision: {results['precision']}" in text and f"torch {torch.__version__}" in text
    assert "bit-identical" in text and "--quick run" in text
    for code in results["languages"]:
        assert f"| {code}" in text
    for name in PLOTS:
        assert f"({name})" in text  # embedded in the report
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE


def test_perplexity_plot_leaves_out_the_shared_bar_of_the_added_language(demo):
    from xmodlm.recipes.demo import perplexity_bars

    out, _ = demo
    results = json.loads((out / "results.json").read_text())
    codes, heldout = list(results["languages"]), results["heldout"]
    categories, series = perplexity_bars(results, codes)
    shared = series["shared"]
    assert shared[codes.index(heldout)] is None and None not in shared[:codes.index(heldout)]
    assert "never trained on it" in categories[codes.index(heldout)]


def test_projection_of_the_total_after_pretraining():
    from xmodlm.recipes.demo import FULL, QUICK, Stages, expected_duration

    assert expected_duration(FULL).startswith("expect 5-9 minutes") and expected_duration(QUICK) is None

    stages = Stages.__new__(Stages)
    stages.started, stages.timings = time.perf_counter(), {"pretrain-xmod": 100.0}
    assert stages.projection() == "1 min 43 s"
    assert FULL.steps == 3000  # the figures the estimate quotes were measured at this scale


def test_pretraining_lowers_perplexity_even_in_a_few_steps(demo):
    results = json.loads((demo[0] / "results.json").read_text())
    for model in ("xmod", "shared"):
        assert results["mean"]["ppl"][model] < results["mean"]["untrained_ppl"][model]


def test_adding_a_language_leaves_old_languages_bit_identical(demo):
    out, _ = demo
    results = json.loads((out / "results.json").read_text())
    old = results["addition"]["old_languages"]
    assert set(old) == set(results["order"]) and results["addition"]["all_bit_identical"]
    pretrain = json.loads((out / "pretrain-xmod" / "results.json").read_text())
    for code, row in old.items():
        assert row["bit_identical"] and row["max_abs_logit_diff"] == 0
        assert row["ppl_after"] == row["ppl_before"]
        # The check runs the pre-training run's own validation batches: it reproduces the run's perplexity.
        assert row["ppl_before"] == pytest.approx(pretrain[f"eval/ppl/{code}"], rel=1e-5)
    # Only the new modules trained: one module's parameters (X-Mod's size minus the shared model's, per extra language).
    parameters = results["parameters"]
    assert results["addition"]["trainable_parameters"] == (parameters["xmod"] - parameters["shared"]) // 2


def test_rerun_skips_every_stage_and_gives_the_same_results(demo):
    out, first_seconds = demo
    before, results = stage_files(out), json.loads((out / "results.json").read_text())
    start = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    seconds = time.perf_counter() - start
    again = json.loads((out / "results.json").read_text())
    assert again["stages_run_now"] == [] and stage_files(out) == before
    assert stable(again) == stable(results)
    assert seconds < first_seconds / 2, (seconds, first_seconds)


def test_an_interrupted_stage_resumes_and_later_stages_run(demo, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(demo[0], out)
    results = json.loads((out / "results.json").read_text())
    # As if killed after its last checkpoint but before writing task.json: the trainer resumes from the checkpoint.
    (out / "finetune-shared" / "task.json").unlink()
    (out / "eval-shared" / "results.json").unlink()
    assert (out / "finetune-shared" / "checkpoint").is_dir()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["stages_run_now"] == ["finetune-shared", "eval-shared"]
    for code, row in again["languages"].items():
        assert row["score"] == results["languages"][code]["score"]


def test_other_settings_in_a_finished_directory_are_an_error(demo, capsys):
    out, _ = demo
    assert main(["demo", "--quick", "--steps", "13", "--out", str(out)]) == 1
    assert "steps: None there, 13 now" in capsys.readouterr().err


def test_unknown_source_language_names_the_choices(tmp_path, capsys):
    assert main(["demo", "--quick", "--source-lang", "xx", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "'xx'" in err and "syn00" in err
