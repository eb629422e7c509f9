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
