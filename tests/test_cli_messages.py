"""What the command line tells the user: threads, precision, progress, where it saved, and errors in flags' terms."""

import json
import random

import pytest

from xmodlm.cli import cli_wording, main
from xmodlm.runtime import choose_threads

TINY = ["--preset", "tiny", "--hidden-size", "32", "--num-hidden-layers", "1", "--seq-len", "16", "--batch-size", "4",
        "--vocab-size", "120", "--valid-lines", "5", "--valid-batches", "1", "--max-steps", "2", "--save-every", "0",
        "--log-every", "1", "--no-tensorboard", "--precision", "auto", "--device", "cpu"]


def write_corpora(directory, codes=("aa_AA", "bb_BB", "cc_CC")):
    directory.mkdir(parents=True, exist_ok=True)
    for i, code in enumerate(codes):
        rng = random.Random(i)
        words = ["".join(rng.choice("abcdefghij"[i:i + 6]) for _ in range(rng.randint(2, 6))) for _ in range(40)]
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(60)]
        (directory / f"{code}.txt").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One tiny pre-training run through the CLI, with what it printed."""
    root = tmp_path_factory.mktemp("cli")
    data = write_corpora(root / "data")
    out = root / "run"
    capture = pytest.MonkeyPatch()
    import io
    import sys

    err = io.StringIO()
    capture.setattr(sys, "stderr", err)
    try:
        code = main(["pretrain", "--data", str(data), "--languages", "aa_AA,bb_BB", "--out", str(out), *TINY])
    finally:
        capture.undo()
    assert code == 0, err.getvalue()
    return root, data, out, err.getvalue()


def test_threads_rule_from_cores_and_load():
    assert choose_threads(0, cores=2, load=0.0)[0] == 2
    assert choose_threads(0, cores=2, load=0.6)[0] == 1  # another job on the second core
    assert choose_threads(0, cores=2, load=3.5)[0] == 1
    assert choose_threads(0, cores=16, load=4.0)[0] == 12
    assert choose_threads(3, cores=2, load=9.0) == (3, "--threads 3")
    with pytest.raises(ValueError, match="--threads -1"):
        choose_threads(-1)


def test_every_command_takes_threads(capsys):
    from xmodlm.cli import COMMANDS, GROUPS

    for argv in [[name] for name in COMMANDS] + [[g, n] for g, specs in GROUPS.items() for n in specs]:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert "--threads" in capsys.readouterr().out, argv


def test_pretrain_says_threads_precision_parameters_and_where_it_saved(pretrained):
    _, _, out, err = pretrained
    assert "CPU thread" in err and "load" in err
    assert "precision: " in err and "--precision auto: this" in err
    assert "parameters train" in err
    assert "training the 120-piece unigram model" in err


def test_pretrain_prints_where_it_saved(pretrained, capsys):
    _, data, out, _ = pretrained
    assert main(["pretrain", "--data", str(data), "--languages", "aa_AA,bb_BB", "--out", str(out), *TINY]) == 0
    captured = capsys.readouterr()
    assert f"saved: model and tokenizer -> {out}" in captured.out
    assert "resuming from step 2" in captured.err  # a finished run, rerun: resumes (and does nothing)


def test_trainer_state_records_the_resolved_precision_and_the_machine(pretrained):
    state = json.loads((pretrained[2] / "checkpoint" / "trainer_state.json").read_text())
    assert state["config"]["precision"] == "auto" and state["precision"] in ("fp32", "bf16")
    assert {"cpu", "cores", "torch", "threads"} <= set(state["machine"])


def test_changed_languages_on_the_same_out_name_the_change(pretrained, capsys):
    _, data, out, _ = pretrained
    assert main(["pretrain", "--data", str(data), "--languages", "aa_AA,cc_CC", "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--languages aa_AA,bb_BB" in err and "added cc_CC" in err and "removed bb_BB" in err
    assert "new --out" in err


def test_add_language_takes_a_directory_and_says_where_it_saved(pretrained, capsys):
    root, data, base, _ = pretrained
    out = root / "added"
    assert main(["add-language", "--model", str(base), "--lang", "cc_CC", "--data", str(data), "--out", str(out),
                 *TINY[TINY.index("--seq-len"):TINY.index("--vocab-size")], "--max-steps", "1", "--valid-lines", "5",
                 "--no-tensorboard", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"saved: model with cc_CC (id 2) and tokenizer -> {out}" in captured.out
    assert "of" in captured.err and "parameters train" in captured.err
    assert main(["add-language", "--model", str(base), "--lang", "dd_DD", "--data", str(data), "--out",
                 str(root / "x")]) == 1
    err = capsys.readouterr().err
    assert "is a directory without dd_DD.txt" in err and "aa_AA.txt" in err


def test_errors_name_flags_not_python_arguments():
    assert cli_wording("Pass fallback='closest' or a language code") == "Pass --fallback closest or a language code"
    assert cli_wording("pass force=True to import anyway") == "pass --force to import anyway"
    assert cli_wording("replace=True to overwrite") == "--replace to overwrite"


def test_fill_mask_error_names_the_fallback_flag(pretrained, capsys):
    _, _, out, _ = pretrained
    code = main(["fill-mask", "--model", str(out), "--text", "Das ist ein <mask> Tag und es regnet nicht.",
                 "--lang", "auto"])
    err = capsys.readouterr().err
    assert code == 1  # the text's language (German) has no module in this model
    assert "--fallback closest" in err and "--lang auto found" in err and "fallback='closest'" not in err


def test_fill_mask_prints_words_not_pieces_and_json_on_request(pretrained, capsys):
    from xmodlm.recipes.predict import format_prediction, word

    assert word("\u2581Tag") == "Tag" and word("ung") == "ung" and word("\u2581") == "\u2581"
    assert format_prediction("a <mask> b", "de_DE", [[("\u2581gut", 0.5), ("s", 0.25)]]) == (
        "de_DE: a [gut] b\n  <mask> 1: gut 50.0%  s 25.0%")
    _, _, out, _ = pretrained
    assert main(["fill-mask", "--model", str(out), "--text", "abc <mask> bcd", "--lang", "aa_AA", "--top-k", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("aa_AA: abc [") and "<mask> 1: " in text and "\u2581" not in text
    assert main(["fill-mask", "--model", str(out), "--text", "abc <mask> bcd", "--lang", "aa_AA", "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["lang"] == "aa_AA" and len(line["masks"][0]) == 5 and "word" in line["masks"][0][0]


def test_unknown_flag_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--modle", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: xmodlm finetune" in err and "unrecognized arguments: --modle" in err


def test_help_lists_required_flags_first_in_sections(capsys):
    for argv, required in ((["pretrain"], ["--data"]), (["add-language"], ["--model", "--lang", "--data"]),
                           (["finetune"], ["--model", "--train"]), (["evaluate"], ["--model", "--data"])):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out
        usage, sections = out.split("\nrequired:\n", 1)[0], out.split("\nrequired:\n", 1)[1]
        first = sections.split("\n\n")[0]
        for flag in required:
            assert flag in first and f"{flag}" in usage
        assert first.count("(required)") == len(required)
        assert usage.index(required[0]) < usage.index("--out")  # and before the generic training flags
        for section in ("data settings:", "optimisation settings:", "output settings:"):
            assert section in sections or argv == ["evaluate"], (argv, section)
        assert "(default: )" not in out and "(default: None)" not in out and "(default: [])" not in out
        for line in out.split("  --")[1:]:
            assert line.count("(default") + line.count("default:") <= 2, line  # once (the text may say it too)


def test_help_shows_lists_comma_separated(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "train,infer,mixed,data,memory" in out.replace("\n", "").replace(" ", "") and "['train'" not in out


def test_finetune_that_learns_nothing_says_so_and_valid_range_selects(pretrained, capsys):
    from xmodlm.synthetic import SyntheticWorld

    root, _, base, _ = pretrained
    data = SyntheticWorld(0).write_nli(root / "nli.tsv", "syn00", 40, seed=1)
    out = root / "ft"
    assert main(["finetune", "--model", str(base), "--task", "nli", "--train", str(data), "--train-range", "0:30",
                 "--valid", str(data), "--valid-range", "30:", "--eval-every", "1", "--source-lang", "aa_AA",
                 "--out", str(out), "--lr", "1e-5", "--max-steps", "2", "--batch-size", "8", "--no-tensorboard",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning: fine-tuning learned nothing visible" in err and "--lr (this run: 1e-05)" in err
    assert "chance level for 3 labels" in err or "for all of 10 checked examples" in err
    assert "accuracy=" in err  # the --eval-every score on the progress bar
    assert main(["finetune", "--model", str(base), "--task", "nli", "--train", str(data), "--valid-range", "30:",
                 "--source-lang", "aa_AA", "--out", str(root / "ft2")]) == 1
    assert "--valid-range selects examples of --valid" in capsys.readouterr().err


def test_learning_warnings_and_default_lr():
    from xmodlm.recipes.finetune import default_lr, learning_warnings, predicted_labels
    from xmodlm.tasks import get

    nli, ner = get("nli"), get("ner")
    labels = ("entailment", "neutral", "contradiction")
    assert learning_warnings(nli, {"loss": 1.0986}, labels, [0, 1, 2])[0].startswith("the training loss ended at 1.099")
    assert learning_warnings(nli, {"loss": 0.6}, labels, [0, 1, 2]) == []
    assert "predicts 'neutral' for all of 3 checked examples" in learning_warnings(nli, {"loss": 0.6}, labels,
                                                                                    [1, 1, 1])[0]
    assert predicted_labels([["O", "B-PER"], ["O"]]) == ["O", "B-PER", "O"] and predicted_labels({"q": "a"}) is None
    assert "for all of 3 checked tokens" in learning_warnings(ner, {"loss": 0.1}, ("O", "B-PER"), ["O"] * 3)[0]
    # NER at lr 1e-5 on the demo's model: 1.944 -> 1.846 in 315 steps (F1 8.4); at 1e-3: 1.885 -> 0.841 (F1 35.7)
    assert learning_warnings(ner, {"loss": 1.846}, ("O", "B-PER"), ["O", "B-PER"], first_loss=1.944) == [
        "the training loss fell only 5% (from 1.944 to 1.846)"]
    assert learning_warnings(ner, {"loss": 0.841}, ("O", "B-PER"), ["O", "B-PER"], first_loss=1.885) == []
    assert default_lr(768) == 1e-5 and default_lr(64) == default_lr(128) == 1e-3


def test_progress_bar_shows_a_few_scores_or_their_means():
    from xmodlm.trainer import bar_scores

    assert bar_scores({"eval/accuracy": 0.41234}) == {"accuracy": "0.4123"}
    many = {f"eval/ppl/l{i}": 10.0 + i for i in range(5)}
    assert bar_scores({**many, "eval/ppl/mean": 12.0}) == {"ppl/mean": "12"}
