"""Pre-training and language-addition recipes, run for real on tiny configs (NTREX text)."""

import json
from pathlib import Path

import pytest
import torch

from xmodlm.cli import main
from xmodlm.model import XmodForMaskedLM

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ntrex"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real NTREX data not found at {DATA}")

COMMON = ["--seq-len", "32", "--batch-size", "8", "--vocab-size", "600", "--log-every", "5",
          "--valid-lines", "100", "--valid-batches", "2", "--seed", "0"]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real NTREX data not found at {DATA}")
    out = tmp_path_factory.mktemp("pretrain")
    code = main(["pretrain", "--data", str(DATA), "--languages", "en_XX,de_DE,fi_FI", "--out", str(out),
                 "--max-steps", "40", "--eval-every", "2", "--lr", "2e-3", "--warmup-ratio", "0", *COMMON])
    assert code == 0
    return out


@needs_data
def test_pretrain_writes_an_hf_checkpoint_and_perplexity_falls_for_every_language(pretrained):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "results.json"):
        assert (pretrained / name).exists(), name
    evals = [m for m in metrics(pretrained) if "eval/ppl/mean" in m]
    first, last = evals[0], evals[-1]
    assert first["step"] == 2 and last["step"] == 40
    for code in ("en_XX", "de_DE", "fi_FI"):
        assert last[f"eval/ppl/{code}"] < 0.8 * first[f"eval/ppl/{code}"], code
    model = XmodForMaskedLM.from_pretrained(pretrained)
    assert model.config.languages == ["en_XX", "de_DE", "fi_FI"]


@needs_data
def test_pretrain_checkpoint_loads_in_transformers(pretrained):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.XmodForMaskedLM.from_pretrained(pretrained, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = transformers.AutoTokenizer.from_pretrained(pretrained)
    ids = tok(["Hallo Welt"], return_tensors="pt")
    ours = XmodForMaskedLM.from_pretrained(pretrained).eval()
    with torch.no_grad():
        ref = model.eval()(**ids, lang_ids=torch.tensor([1])).logits
        got = ours(ids["input_ids"], ids["attention_mask"], lang_ids=["de_DE"]).logits
    assert torch.allclose(ref, got, atol=1e-5)


@needs_data
def test_rerunning_the_command_resumes(tmp_path):
    args = ["pretrain", "--data", str(DATA), "--languages", "en_XX,fr_XX", "--out", str(tmp_path),
            "--save-every", "4", *COMMON]
    assert main([*args, "--max-steps", "6"]) == 0
    assert main([*args, "--max-steps", "10"]) == 0
    steps = [m["step"] for m in metrics(tmp_path) if "loss" in m]
    assert steps == [5, 6, 10], steps  # the second run continued from step 6, it did not restart


@needs_data
def test_shared_baseline_uses_as_many_parameters_per_language_as_xmod(tmp_path, pretrained):
    out = tmp_path / "shared"
    assert main(["pretrain", "--data", str(DATA), "--languages", "en_XX,de_DE,fi_FI", "--out", str(out),
                 "--max-steps", "2", "--shared", "--tokenizer", str(pretrained), *COMMON]) == 0
    shared, xmod = XmodForMaskedLM.from_pretrained(out), XmodForMaskedLM.from_pretrained(pretrained)
    assert shared.config.shared_module
    per_language = sum(p.numel() for p in xmod.roberta.encoder.layer[0].output.adapter_modules["en_XX"].parameters())
    per_language *= xmod.config.num_hidden_layers
    assert shared.num_parameters() == xmod.num_parameters() - 2 * per_language
    layer = shared.roberta.encoder.layer[0].output.adapter_modules
    assert layer["en_XX"] is layer["fi_FI"]


@needs_data
def test_unknown_language_is_an_error_naming_it(tmp_path, capsys):
    assert main(["pretrain", "--data", str(DATA), "--languages", "en_XX,xx_YY", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "xx_YY" in err and "en_XX" in err


@needs_data
def test_add_language_trains_only_the_new_modules(pretrained, tmp_path):
    out = tmp_path / "added"
    assert main(["add-language", "--model", str(pretrained), "--lang", "fr_XX", "--data", str(DATA / "fr_XX.txt"),
                 "--init-from", "de_DE", "--out", str(out), "--max-steps", "3", "--seq-len", "32",
                 "--batch-size", "8", "--valid-lines", "100", "--valid-batches", "1",
                 "--extend-vocab", "0", "--no-train-unseen-rows"]) == 0  # vocabulary rows: test_add_language.py
    before, after = XmodForMaskedLM.from_pretrained(pretrained).eval(), XmodForMaskedLM.from_pretrained(out).eval()
    assert after.config.languages == ["en_XX", "de_DE", "fi_FI", "fr_XX"]
    old = before.state_dict()
    for name, tensor in after.state_dict().items():
        if ".adapter_modules.fr_XX." in name:
            source = name.replace(".fr_XX.", ".de_DE.")
            assert not torch.equal(tensor, old[source]), f"{name} did not train"
        else:
            assert torch.equal(tensor, old[name]), f"{name} changed"
    ids = torch.randint(4, 500, (3, 12))
    with torch.no_grad():
        for code in ("en_XX", "de_DE", "fi_FI"):
            assert torch.equal(before(ids, lang_ids=code).logits, after(ids, lang_ids=code).logits)


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_with_torchrun_log_the_losses_of_one(pretrained, tmp_path, strategy):
    """DDP or FSDP (gloo, 2 CPU processes) on the same global batch: the same losses as one process."""
    import subprocess
    import sys

    args = ["pretrain", "--data", str(DATA), "--languages", "en_XX,de_DE", "--tokenizer", str(pretrained),
            "--seq-len", "32", "--batch-size", "8", "--max-steps", "3", "--log-every", "1", "--valid-batches", "1",
            "--valid-lines", "100", "--precision", "fp32", "--dropout", "0"]  # dropout streams differ per rank
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "-m", "xmodlm", *args, "--strategy", strategy, "--out", str(tmp_path / "two")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    one = [m["loss"] for m in metrics(tmp_path / "one") if "loss" in m]
    two = [m["loss"] for m in metrics(tmp_path / "two") if "loss" in m]
    assert len(one) == 3 and one == pytest.approx(two, abs=1e-5)
    a, b = XmodForMaskedLM.from_pretrained(tmp_path / "one"), XmodForMaskedLM.from_pretrained(tmp_path / "two")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-5), name


def test_hf_dataset_corpora_are_streamed_to_files(tmp_path, monkeypatch):
    """The hub is unreachable here: a stand-in for data.hf_dataset_lines checks the wiring (config = the
    language part of the code, only the first N non-empty lines, atomic files that a rerun keeps)."""
    from xmodlm import data as data_mod
    from xmodlm.recipes.pretrain import fetch_hf_corpora

    calls = []

    def fake(name, config, split):
        calls.append((name, config, split))
        return iter(["", *[f"{config} line {i}" for i in range(100)]])

    monkeypatch.setattr(data_mod, "hf_dataset_lines", fake)
    out = fetch_hf_corpora("cc100", ["sw_KE", "fi_FI"], 5, tmp_path / "data")
    assert calls == [("cc100", "sw", "train"), ("cc100", "fi", "train")]
    assert (out / "sw_KE.txt").read_text().splitlines() == [f"sw line {i}" for i in range(5)]
    fetch_hf_corpora("cc100", ["sw_KE", "fi_FI"], 5, tmp_path / "data")
    assert len(calls) == 2  # complete files are not fetched again
    with pytest.raises(ValueError, match="--languages"):
        fetch_hf_corpora("cc100", [], 5, tmp_path / "other")


@needs_data
def test_fill_mask_with_automatic_language_choice(pretrained, capsys):
    assert main(["fill-mask", "--model", str(pretrained), "--text", "Das ist ein <mask> Tag, sagte er.",
                 "--text", "Tämä on <mask> päivä.", "--lang", "auto", "--top-k", "2", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["lang"] for line in lines] == ["de_DE", "fi_FI"]
    assert all(len(line["masks"]) == 1 and len(line["masks"][0]) == 2 for line in lines)
    # Spanish has no module: an error naming the detected language, unless a fallback is chosen.
    assert main(["fill-mask", "--model", str(pretrained), "--text", "¿Dónde está la <mask> del tren?"]) == 1
    assert "es_XX" in capsys.readouterr().err
    assert main(["fill-mask", "--model", str(pretrained), "--text", "¿Dónde está la <mask> del tren?",
                 "--fallback", "en_XX"]) == 0


@needs_data
def test_languages_command_exports_imports_renames_and_removes(pretrained, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert main(["languages", "list", "--model", str(pretrained)]) == 0
    assert "fi_FI" in capsys.readouterr().out
    assert main(["languages", "export", "--model", str(pretrained), "--lang", "fi_FI",
                 "--file", str(tmp_path / "fi.safetensors")]) == 0
    assert main(["languages", "rename", "--model", str(pretrained), "--lang", "fi_FI", "--new", "fi_XX",
                 "--out", str(model_dir)]) == 0
    assert main(["languages", "import", "--model", str(model_dir), "--lang", "fi_FI",
                 "--file", str(tmp_path / "fi.safetensors")]) == 0
    assert main(["languages", "remove", "--model", str(model_dir), "--lang", "de_DE"]) == 0
    model = XmodForMaskedLM.from_pretrained(model_dir)
    assert model.config.languages == ["en_XX", "fi_XX", "fi_FI"]
    ids = torch.randint(4, 500, (2, 9))
    with torch.no_grad():  # the imported copy of fi_FI is the renamed one, weight for weight
        assert torch.equal(model.eval()(ids, lang_ids="fi_XX").logits, model(ids, lang_ids="fi_FI").logits)
