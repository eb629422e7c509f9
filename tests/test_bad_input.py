"""Reliability catalogue (issue 17): every defect a careful user found by killing runs, filling the disk, running two
runs on one directory and feeding hostile files and settings. Each case asserts the message and that nothing on disk
changed or was lost."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_trainer import ToyBatches, make_trainer  # noqa: E402  (tests/ is on sys.path)
from tiny import ours

from xmodlm.model import XmodForMaskedLM, XmodForTokenClassification
from xmodlm.trainer import TrainingDiverged, find_checkpoint


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``directory``."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- 1. a diverged step never reaches disk -----------------------------------------------------------------------
def test_diverged_step_stops_before_the_update_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, steps=30, lr=1e12, save_every=1, log_every=10, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"not finite at step (\d+).*the step was not applied") as err:
        trainer.fit()
    step = int(err.value.args[0].split("at step ")[1].split()[0])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # the bad update was never applied
    checkpoint = find_checkpoint(tmp_path)
    if step > 1:
        assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == step - 1
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())
    else:
        assert checkpoint is None


def test_token_classification_batch_without_labels_has_zero_loss():
    model = ours(XmodForTokenClassification, id2label={0: "O", 1: "B", 2: "I"}).train()
    ids = torch.randint(3, 100, (2, 6))
    out = model(ids, lang_ids=torch.tensor([0, 1]), labels=torch.full((2, 6), -100))
    assert torch.isfinite(out.loss) and out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_nonfinite_weights_are_refused_on_load_unless_asked(tmp_path):
    ours().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    name = next(n for n in tensors if n.endswith("dense1.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"NaN or infinite.*allow_nonfinite=True"):
        XmodForMaskedLM.from_pretrained(tmp_path)
    model = XmodForMaskedLM.from_pretrained(tmp_path, allow_nonfinite=True)
    assert torch.isnan(dict(model.named_parameters())[name]).any()


# ---- 2. settings that train wrong are refused --------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--max-grad-norm", "-1"], r"'max_grad_norm'.*-1.0 is out of range; it must be >= 0"),
    (["--batch-size", "0"], r"'batch_size'.*0 is out of range; it must be >= 1"),
    (["--valid-batches", "0"], r"'valid_batches'.*it must be >= 1"),
    (["--valid-lines", "0"], r"'valid_lines'.*it must be >= 1"),
    (["--betas", "0.9"], r"'betas'.*1 value\(s\) \[0.9\]; it takes exactly 2"),
    (["--betas", "0.9,1.5"], r"'betas'.*1.5 is out of range; it must be >= 0 and < 1"),
    (["--save-every", "-1"], r"'save_every'.*it must be >= 0"),
    (["--eval-every", "-5"], r"'eval_every'.*it must be >= 0"),
    (["--warmup-ratio", "2"], r"'warmup_ratio'.*it must be >= 0 and <= 1"),
    (["--lr", "0"], r"'lr'.*it must be > 0"),
    (["--lr", "nan"], r"'lr'.*nan is out of range"),
    (["--max-steps", "0"], r"'max_steps'.*it must be >= 1"),
    (["--warmup-steps", "5", "--warmup-ratio", "0.1"], r"'warmup_steps' and 'warmup_ratio'.*both given"),
])
def test_out_of_range_settings_are_refused_at_parse_time(tmp_path, capsys, flags, message):
    from xmodlm.cli import main

    out = tmp_path / "out"
    assert main(["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(out), *flags]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    import re
    assert re.search(message, err), err
    assert not out.exists()  # refused before anything was written


def test_ranges_hold_for_yaml_and_for_every_recipe(tmp_path):
    from xmodlm.recipes.add_language import AddLanguageSettings
    from xmodlm.recipes.finetune import FinetuneSettings
    from xmodlm.recipes.predict import FillMaskSettings
    from xmodlm.recipes.pretrain import PretrainSettings
    from xmodlm.settings import build, from_args
    import argparse

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("max_grad_norm: -1\n")
    with pytest.raises(ValueError, match=r"'max_grad_norm' in .*run.yaml.*must be >= 0"):
        from_args(PretrainSettings, argparse.Namespace(config=str(yaml_file)))
    with pytest.raises(ValueError, match="'batch_size'"):
        build(AddLanguageSettings, {"batch_size": 0})
    with pytest.raises(ValueError, match="'lr'"):
        build(FinetuneSettings, {"lr": -1e-5})
    with pytest.raises(ValueError, match="'top_k'"):
        build(FillMaskSettings, {"top_k": 0})
    # --warmup-steps alone works, although the recipe's default ratio is not 0: steps win
    s = build(PretrainSettings, {"warmup_steps": 5, "max_steps": 100})
    assert s.warmup_ratio == 0.06 and s.warmup == 5


def test_changed_settings_on_resume_are_applied_or_refused(tmp_path):
    make_trainer(tmp_path, steps=4, save_every=2).fit()
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"lr: 0.01 in the checkpoint, 0.02 now.*new out_dir"):
        make_trainer(tmp_path, steps=6, lr=2e-2)
    with pytest.raises(ValueError, match=r"max_grad_norm: 1.0 in the checkpoint, 0.5 now"):
        make_trainer(tmp_path, steps=6, max_grad_norm=0.5)
    assert snapshot(tmp_path) == before
    trainer = make_trainer(tmp_path, steps=6, save_every=3, log_every=2)  # applied: more steps, other intervals
    assert trainer.fit()["step"] == 6


def test_changed_recipe_settings_on_resume_are_refused(tmp_path):
    from xmodlm.trainer import TrainConfig, Trainer
    from test_trainer import ToyMLM

    def trainer(**fixed):
        config = TrainConfig(max_steps=2, save_every=1, out_dir=str(tmp_path), device="cpu", precision="fp32",
                             tensorboard=False, log_every=1)
        return Trainer(ToyMLM(), config, ToyBatches(), fixed=fixed)

    trainer(batch_size=8, languages=["a", "b"]).fit()
    with pytest.raises(ValueError, match=r"batch_size: 8 in the checkpoint, 16 now"):
        trainer(batch_size=16, languages=["a", "b"])
    with pytest.raises(ValueError, match=r"languages: \['a', 'b'\] in the checkpoint, \['a'\] now"):
        trainer(batch_size=8, languages=["a"])
