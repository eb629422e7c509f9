"""The curse-of-multilinguality experiment, run for real on tiny synthetic settings, and its resume logic."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from xmodlm import report
from xmodlm.cli import main
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes import experiment
from xmodlm.synthetic import SyntheticWorld
from xmodlm.trainer import Trainer

NTREX = Path(__file__).resolve().parents[3] / "shared" / "data" / "ntrex"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# k = 1 and 2; 2 updates per language; tiny model on 16-token rows; 200 synthetic sentences per language.
TINY = ["experiment", "curse", "--synthetic", "--languages", "1,2", "--steps-per-language", "2", "--preset", "tiny",
        "--seq-len", "16", "--batch-size", "4", "--vocab-size", "200", "--synthetic-sentences", "200",
        "--valid-lines", "40", "--valid-batches", "1", "--log-every", "1", "--seed", "0"]


def run_files(out: Path) -> dict[str, float]:
    """Modification times of every file a run wrote: unchanged means the run was skipped."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted((out / "runs").rglob("*")) if p.is_file()}


def without_wall(results: dict) -> dict:
    return {k: v for k, v in results.items() if k != "wall_s_this_invocation"}


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curse")
    assert main([*TINY, "--out", str(out)]) == 0
    return out


def test_results_json_has_every_run_language_and_field(done):
    results = json.loads((done / "results.json").read_text())
    assert results["order"] == ["syn00", "syn01"] and results["common_languages"] == ["syn00"]
    for k, languages in (("1", ["syn00"]), ("2", ["syn00", "syn01"])):
        for model in ("xmod", "shared"):
            run = results["runs"][k][model]
            assert run["languages"] == languages
            assert run["steps"] == 2 * len(languages)  # the same expected updates per language at every k
            assert set(run["ppl"]) == set(languages) and all(v > 1 for v in run["ppl"].values())
            assert run["mean_ppl"] == pytest.approx(sum(run["ppl"].values()) / len(languages))
            assert run["mean_ppl_common"] == pytest.approx(run["ppl"]["syn00"])
            assert set(run["parameters"]) == {"total", "per_language", "module", "language_modules"}
            assert set(run["updates"]) == set(languages) and sum(run["updates"].values()) == run["steps"]
            assert set(run["lines_read"]) == set(languages) and min(run["lines_read"].values()) > 0
            assert run["wall_s"] > 0 and run["train_s"] > 0 and run["final_loss"] > 0
            assert (done / run["dir"] / "model.safetensors").is_file()
    xmod, shared = results["runs"]["2"]["xmod"]["parameters"], results["runs"]["2"]["shared"]["parameters"]
    assert xmod["per_language"] == shared["per_language"]  # each language uses as many parameters in both
    assert xmod["total"] == shared["total"] + xmod["module"]  # X-Mod grows by one module per language
    assert xmod["language_modules"] == 2 * xmod["module"] and shared["language_modules"] == shared["module"]


def test_with_one_language_xmod_and_shared_are_the_same_model(done):
    runs = json.loads((done / "results.json").read_text())["runs"]["1"]
    assert runs["xmod"]["ppl"]["syn00"] == pytest.approx(runs["shared"]["ppl"]["syn00"], rel=1e-5)


def test_held_out_language_is_added_from_a_related_pretraining_language(done):
    results = json.loads((done / "results.json").read_text())
    heldout, source = results["heldout"], results["init_from"]
    assert heldout not in results["order"] and source in results["order"]
    assert source in SyntheticWorld(0).related(heldout)
    addition = results["addition"]
    assert addition["base_model"] == "runs/k2-xmod" and set(addition["runs"]) == {"random", f"from-{source}", "average"}
    assert 0 <= addition["unseen_pieces"] < 1
    for run in addition["runs"].values():
        assert run["steps"] == 2 and run["ppl"] > 1
        assert run["trainable_parameters"] == results["runs"]["2"]["xmod"]["parameters"]["module"]
    joint = addition["joint"]
    assert joint["languages"] == ["syn00", "syn01", heldout] and joint["steps"] == 6 and joint["ppl"][heldout] > 1


def test_report_has_the_tables_and_valid_pngs(done):
    text = (done / "report.md").read_text()
    assert "## Validation perplexity, X-Mod" in text and "## Validation perplexity, shared baseline" in text
    assert "| language" in text and "k=1" in text and "k=2" in text
    for row in ("| syn00", "| syn01", "| mean (all k languages)", "| mean (syn00)"):
        assert text.count(row) == 2, row  # one row in the X-Mod table, one in the shared table
    results = json.loads((done / "results.json").read_text())
    assert f"## Adding {results['heldout']}" in text and "from the start" in text
    for name in ("curse_mean.png", "curse_per_language.png"):
        data = (done / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 1000, name


def test_rerun_skips_finished_runs_and_gives_identical_results(done, capsys):
    before_files, before = run_files(done), json.loads((done / "results.json").read_text())
    capsys.readouterr()
    assert main([*TINY, "--out", str(done)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before, skipped") == 8 and "train:" not in printed
    assert run_files(done) == before_files  # nothing retrained, nothing rewritten
    assert without_wall(json.loads((done / "results.json").read_text())) == without_wall(before)


def test_interrupted_run_resumes_from_its_checkpoint(done, tmp_path, monkeypatch, capsys):
    out = tmp_path / "curse"
    shutil.copytree(done, out)
    shutil.rmtree(out / "runs" / "k2-xmod")
    original, calls = Trainer._train_step, []

    def dies_at_step_3(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", dies_at_step_3)
    assert main([*TINY, "--out", str(out), "--save-every", "1"]) == 130  # interrupted, as by Ctrl-C
    assert not (out / "runs" / "k2-xmod" / "results.json").exists()
    monkeypatch.setattr(Trainer, "_train_step", original)
    capsys.readouterr()
    assert main([*TINY, "--out", str(out), "--save-every", "1"]) == 0
    assert "k=2 X-Mod: resuming" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (out / "runs" / "k2-xmod" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the first invocation, 3-4 after the resume
    resumed = json.loads((out / "results.json").read_text())["runs"]["2"]["xmod"]["ppl"]
    uninterrupted = json.loads((done / "results.json").read_text())["runs"]["2"]["xmod"]["ppl"]
    assert resumed == pytest.approx(uninterrupted, rel=1e-5)


def test_other_settings_in_the_same_out_dir_are_an_error(done, capsys):
    assert main([*TINY, "--out", str(done), "--steps-per-language", "3"]) == 1
    err = capsys.readouterr().err
    assert "steps_per_language" in err and str(done) in err


def test_needs_exactly_one_data_source(tmp_path, capsys):
    assert main(["experiment", "curse", "--out", str(tmp_path)]) == 1
    assert "--synthetic" in capsys.readouterr().err


def test_a_changed_language_plan_is_an_error(done, tmp_path, capsys):
    out = tmp_path / "curse"
    shutil.copytree(done, out)
    plan = json.loads((out / "plan.json").read_text())
    report.write_json(out / "plan.json", {**plan, "heldout": "syn63"})  # as if an older default had chosen syn63
    assert main([*TINY, "--out", str(out)]) == 1
    assert "syn63" in capsys.readouterr().err


def test_synthetic_held_out_language_shares_its_relatives_script(tmp_path):
    s = experiment.CurseSettings(synthetic=True)
    plan = experiment.plan_synthetic(s, [2, 4, 8, 16], tmp_path)
    world = SyntheticWorld(0)
    assert plan.order == world.languages[:16] and plan.heldout not in plan.order
    assert plan.init_from in world.related(plan.heldout)
    assert plan.info[plan.heldout]["script"] == plan.info[plan.init_from]["script"]
    assert plan.info[plan.heldout]["family"] == plan.info[plan.init_from]["family"]
    assert not any(tmp_path.iterdir())  # planning writes nothing


@pytest.mark.skipif(not NTREX.is_dir(), reason=f"real NTREX data not found at {NTREX}")
def test_ntrex_plan_holds_out_the_last_code_and_keeps_sorted_order():
    s = experiment.CurseSettings(data=str(NTREX), languages=[2, 4, 16])
    plan = experiment.plan_data(s, [2, 4, 16])
    codes = sorted(p.name[:-4] for p in NTREX.glob("*.txt"))
    assert plan.heldout == codes[-1] and plan.order == codes[:-1] and plan.init_from == codes[0]
    assert set(plan.corpora) == set(codes)
    chosen = experiment.plan_data(experiment.CurseSettings(data=str(NTREX), heldout="es_XX", init_from="fr_XX"),
                                  [8])
    assert "es_XX" not in chosen.order and chosen.init_from == "fr_XX"
    with pytest.raises(ValueError, match="17"):
        experiment.plan_data(s, [17])


def test_markdown_table_aligns_and_marks_missing_cells():
    text = report.markdown_table(["language", "k=2"], [["en", 12.345], ["de", None], ["n", 1234567]])
    lines = text.splitlines()
    assert lines[0].startswith("| language") and lines[1].startswith("| :") and lines[1].endswith(": |")
    assert "12.35" in text and "–" in text and "1,234,567" in text
    assert len({len(line) for line in lines}) == 1
    with pytest.raises(ValueError, match="row 0"):
        report.markdown_table(["a", "b"], [[1]])


# ---------------------------------------------------------------------------------------------------------------
# --seeds and --retrieval: the same runs give the curse table over seeds and retrieval before/after fine-tuning

PARALLEL = ["syn00", "syn01", "syn02", "syn16", "syn17"]  # sorted: syn17 (last) is held out and added post hoc
FAMILIES = {"syn00": "A", "syn01": "C", "syn02": "B", "syn16": "B", "syn17": "A"}
RETRIEVAL = ["experiment", "curse", "--languages", "2,4", "--steps-per-language", "2", "--preset", "tiny",
             "--seq-len", "16", "--batch-size", "4", "--vocab-size", "200", "--valid-lines", "20", "--valid-batches",
             "1", "--no-joint", "--seeds", "0,1", "--retrieval", "--related-pivots", "syn02", "--retrieval-finetune",
             "syn01", "--eval-limit", "40", "--finetune-range", "50:", "--finetune-steps", "2",
             "--finetune-batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def retrieval_done(tmp_path_factory) -> tuple[Path, list[str]]:
    """Five synthetic languages saying the same 150 sentences (line-aligned: a parallel corpus), with families."""
    root = tmp_path_factory.mktemp("curse-retrieval")
    data = root / "data"
    data.mkdir()
    world = SyntheticWorld(0)
    meanings = world.sample_meanings(150, seed=3)
    for code in PARALLEL:
        (data / f"{code}.txt").write_text("\n".join(world.realise(m, code) for m in meanings) + "\n")
    (data / "languages.tsv").write_text("code\tfamily\n" + "".join(f"{c}\t{f}\n" for c, f in FAMILIES.items()))
    args = [*RETRIEVAL, "--data", str(data), "--out", str(root / "out")]
    assert main(args) == 0
    return root / "out", args


def test_seeds_give_mean_and_spread_of_the_curse_table(retrieval_done):
    out, _ = retrieval_done
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["order"] == ["syn00", "syn01", "syn02", "syn16"]
    for seed in (0, 1):
        one = json.loads((out / f"seed{seed}" / "results.json").read_text())
        assert one["settings"]["seed"] == seed and (out / f"seed{seed}" / "runs" / "k4-xmod").is_dir()
    gain = results["curse"]["4"]["gain"]
    assert set(gain["per_language"]) == set(results["order"]) and len(gain["mean"]["values"]) == 2
    per_seed = [json.loads((out / f"seed{n}" / "results.json").read_text())["runs"]["4"]["xmod"]["mean_ppl"]
                for n in (0, 1)]
    assert results["curse"]["4"]["xmod"]["mean_ppl"]["mean"] == pytest.approx(sum(per_seed) / 2)
    assert results["families"]["syn16"] == "B"  # from languages.tsv
    tokenizers = [(out / f"seed{n}" / "tokenizer" / "tokenizer.json").read_bytes() for n in (0, 1)]
    assert tokenizers[0] == tokenizers[1]  # trained once, by the first seed


def test_retrieval_scores_every_run_fine_tunes_the_largest_and_adds_the_held_out_language(retrieval_done):
    out, _ = retrieval_done
    r = json.loads((out / "seed0" / "results.json").read_text())["retrieval"]
    assert r["pivot"] == "syn00" and r["finetune"] == ["syn01"] and r["layer"] == 1
    assert set(r["k"]["2"]["xmod"]) == {"before"} and set(r["k"]["4"]["shared"]) == {"before", "after"}
    assert set(r["k"]["4"]["xmod"]["after"]) == {"syn01", "syn02", "syn16"}
    assert set(r["k"]["untrained"]["untrained"]["before"]) == {"syn01", "syn02", "syn16"}
    assert set(r["related"]["syn02"]["4"]["xmod"]["after"]) == {"syn16"}  # syn16's relative is the extra pivot
    rows = r["added"]["rows"]
    assert r["added"]["language"] == "syn17" and len(rows) == 5  # 3 X-Mod initialisations, shared, untrained
    assert all(set(row) == {"before", "after"} for label, row in rows.items() if not label.startswith("untrained"))
    graft = out / "seed0" / "retrieval" / "runs" / "k4-xmod-ft+syn17-random"
    assert json.loads((graft / "config.json").read_text())["languages"][-1] == "syn17"
    grafted = dict(XmodForMaskedLM.from_pretrained(graft).named_parameters())
    tuned = dict(XmodForMaskedLM.from_pretrained(out / "seed0" / "retrieval" / "runs" / "k4-xmod-ft").named_parameters())
    added = dict(XmodForMaskedLM.from_pretrained(out / "seed0" / "runs" / "add-syn17-random").named_parameters())
    for name, p in grafted.items():  # the fine-tuned model's weights, plus the added run's syn17 modules
        assert torch.equal(p, added[name] if ".syn17." in name else tuned[name]), name
    assert any(".syn17." in name for name in grafted)
    text = (out / "report.md").read_text()
    for heading in ("## Curse of multilinguality", "### Relative gain of X-Mod per language",
                    "## Retrieval against syn00 (A), k=4", "### syn17, added after pre-training",
                    "### Related languages: B against syn02, k=4", "### Paired differences"):
        assert heading in text, heading
    assert "| syn16 | B | unrelated | zero-shot |" in " ".join(text.split()).replace("| ", "| ")
    for name in ("curse_mean.png", "retrieval_by_k.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE


def test_seeds_and_retrieval_rerun_skips_everything(retrieval_done, capsys):
    out, args = retrieval_done
    before = json.loads((out / "results.json").read_text())
    evals = {p: p.stat().st_mtime_ns for p in out.rglob("eval/*/results.json")}
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "starting" not in printed and "train:" not in printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("eval/*/results.json")} == evals
    after = json.loads((out / "results.json").read_text())
    assert without_wall(after)["retrieval"] == without_wall(before)["retrieval"]
    assert after["curse"] == before["curse"]


def test_other_retrieval_settings_in_the_same_out_dir_are_an_error(retrieval_done, capsys):
    out, args = retrieval_done
    assert main([*args, "--eval-limit", "30"]) == 1
    assert "eval_limit" in capsys.readouterr().err
