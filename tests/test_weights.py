"""Checkpoint directories (xmodlm.weights): Hugging Face directories in both directions (reference:
transformers' Xmod classes), hub ids, damaged files, pickle safety of pytorch_model.bin.

Tiny random models (2 layers, width 32, vocab 100, 3 languages), float32, eval mode, dropout
off; outputs compared with max abs diff <= 1e-5.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from tiny import LANGS, TOL, WritesAFile, inputs, ours, randomize, tiny_config
from xmodlm.model import (
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodModel,
)


def first_output(out):
    for name in ("logits", "start_logits", "last_hidden_state"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    raise AssertionError(out)


def run(model, reference=False, mc=False):
    ids, mask, lang = inputs()
    if mc:  # (B, C, T) with one language for the batch, the form the reference can take
        ids, mask, lang = ids.view(2, 2, -1), mask.view(2, 2, -1), torch.tensor([1])
    with torch.no_grad():
        if reference:
            return first_output(model(input_ids=ids, attention_mask=mask, lang_ids=lang))
        return first_output(model(ids, attention_mask=mask, lang_ids=lang))


HEADS = [
    (XmodModel, transformers.XmodModel),
    (XmodForMaskedLM, transformers.XmodForMaskedLM),
    (XmodForSequenceClassification, transformers.XmodForSequenceClassification),
    (XmodForTokenClassification, transformers.XmodForTokenClassification),
    (XmodForQuestionAnswering, transformers.XmodForQuestionAnswering),
    (XmodForMultipleChoice, transformers.XmodForMultipleChoice),
]
HEAD_IDS = [h[0].__name__ for h in HEADS]


def labels_for(cls):
    """Three labels where a head has a label set; QA's two outputs are start and end."""
    if cls in (XmodForSequenceClassification, XmodForTokenClassification):
        return {0: "a", 1: "b", 2: "c"}
    return None


# ---------------------------------------------------------------------------------------
# Hugging Face directories, both directions
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ours_cls, ref_cls", HEADS, ids=HEAD_IDS)
def test_ours_to_transformers(ours_cls, ref_cls, tmp_path):
    """Reference: transformers.Xmod*.from_pretrained on our directory: no missing, unexpected or
    mismatched keys, same outputs."""
    model = ours(ours_cls, id2label=labels_for(ours_cls))
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    ref, info = ref_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and not info["mismatched_keys"]
    mc = ours_cls is XmodForMultipleChoice
    assert (run(model, mc=mc) - run(ref.eval(), reference=True, mc=mc)).abs().max() <= TOL


@pytest.mark.parametrize("ours_cls, ref_cls", HEADS, ids=HEAD_IDS)
def test_transformers_to_ours(ours_cls, ref_cls, tmp_path):
    """Reference: a directory written by transformers.Xmod*.save_pretrained, read by ours."""
    ref_config = transformers.XmodConfig(**{k: v for k, v in tiny_config().to_dict().items()
                                            if k not in ("id2label", "label2id", "shared_module")},
                                         id2label=labels_for(ours_cls))
    torch.manual_seed(0)
    ref = randomize(ref_cls(ref_config))
    ref.save_pretrained(tmp_path)
    model = ours_cls.from_pretrained(tmp_path).eval()
    assert model.config.num_labels == ref_config.num_labels and model.config.languages == LANGS
    mc = ours_cls is XmodForMultipleChoice
    assert (run(model, mc=mc) - run(ref, reference=True, mc=mc)).abs().max() <= TOL


def test_sharded_transformers_checkpoint(tmp_path):
    """Reference: transformers.XmodForMaskedLM.save_pretrained with small shards (an index file)."""
    ref = randomize(transformers.XmodForMaskedLM(transformers.XmodConfig(
        **{k: v for k, v in tiny_config().to_dict().items() if k not in ("id2label", "label2id", "shared_module")})))
    ref.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model = XmodForMaskedLM.from_pretrained(tmp_path).eval()
    assert (run(model) - run(ref, reference=True)).abs().max() <= TOL


def test_old_transformers_position_ids_buffer_is_ignored(tmp_path):
    """transformers < 4.31 saved roberta.embeddings.position_ids (facebook/xmod-base has it)."""
    model = ours()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["roberta.embeddings.position_ids"] = torch.arange(130)[None]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = XmodForMaskedLM.from_pretrained(tmp_path).eval()
    assert torch.equal(run(loaded), run(model))


def test_mlm_checkpoint_into_classification_head(tmp_path, caplog):
    """The encoder comes from the checkpoint, the new head is initialised fresh (and logged)."""
    mlm = ours()
    mlm.save_pretrained(tmp_path)
    with caplog.at_level("INFO", logger="xmodlm.weights"):
        clf = XmodForSequenceClassification.from_pretrained(tmp_path, id2label={0: "x", 1: "y", 2: "z"})
    for name, p in clf.roberta.state_dict().items():
        assert torch.equal(p, mlm.roberta.state_dict()[name]), name
    assert clf.classifier.out_proj.weight.shape == (3, 32)
    assert torch.equal(clf.classifier.out_proj.bias, torch.zeros(3))
    assert 0.01 < clf.classifier.dense.weight.std().item() < 0.03  # initializer_range 0.02
    assert "classifier.out_proj.weight" in caplog.text
    mc = XmodForMultipleChoice.from_pretrained(tmp_path)  # its pooler is not in an MLM checkpoint
    assert torch.equal(mc.roberta.embeddings.word_embeddings.weight, mlm.roberta.embeddings.word_embeddings.weight)
    base = XmodModel.from_pretrained(tmp_path)
    assert torch.equal(base.encoder.layer[1].output.dense.weight, mlm.roberta.encoder.layer[1].output.dense.weight)


def test_classification_checkpoint_into_mlm_keeps_the_encoder(tmp_path):
    clf = ours(XmodForTokenClassification)
    clf.save_pretrained(tmp_path)
    mlm = XmodForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(mlm.roberta.encoder.layer[0].attention.self.key.weight,
                       clf.roberta.encoder.layer[0].attention.self.key.weight)
    assert mlm.lm_head.decoder.weight is mlm.roberta.embeddings.word_embeddings.weight  # tied again


# ---------------------------------------------------------------------------------------
# Hub ids
# ---------------------------------------------------------------------------------------
def test_local_directory_given_as_a_name(tmp_path, monkeypatch):
    model = ours()
    model.save_pretrained(tmp_path / "xmod-tiny")
    monkeypatch.chdir(tmp_path)
    loaded = XmodForMaskedLM.from_pretrained("xmod-tiny").eval()
    assert torch.equal(run(loaded), run(model))


def test_unknown_hub_id_offline(monkeypatch):
    """The hub is unreachable here: an id that is no local directory must fail clearly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    except ImportError:
        pass
    with pytest.raises(FileNotFoundError, match="org/name"):
        XmodForMaskedLM.from_pretrained("org/name")


def test_unknown_hub_id_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(FileNotFoundError, match="org/name.*huggingface_hub is not installed"):
        XmodForMaskedLM.from_pretrained("org/name")


def test_missing_local_path():
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        XmodForMaskedLM.from_pretrained("./no/such/dir")


# ---------------------------------------------------------------------------------------
# Damaged checkpoints
# ---------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    model = ours()
    model.save_pretrained(tmp_path)
    return tmp_path


def test_truncated_safetensors_names_the_file(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt or truncated"):
        XmodForMaskedLM.from_pretrained(saved)


def test_garbage_safetensors_names_the_file(saved):
    (saved / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 10)
    with pytest.raises(ValueError, match=r"model\.safetensors: corrupt or truncated"):
        XmodForMaskedLM.from_pretrained(saved)


def test_shape_mismatch_names_the_tensor(saved):
    state = load_file(saved / "model.safetensors")
    name = "roberta.encoder.layer.1.output.adapter_modules.de_DE.dense1.weight"
    state[name] = torch.zeros(8, 32)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(ValueError, match=rf"model\.safetensors: tensor '{name}' has shape \(8, 32\).*\(16, 32\)"):
        XmodForMaskedLM.from_pretrained(saved)


def test_missing_encoder_tensor_is_named(saved):
    state = load_file(saved / "model.safetensors")
    del state["roberta.encoder.layer.0.attention.self.value.bias"]
    save_file(state, saved / "model.safetensors")
    with pytest.raises(ValueError, match="missing encoder tensors.*layer.0.attention.self.value.bias"):
        XmodForMaskedLM.from_pretrained(saved)


def test_module_of_an_unknown_language_is_an_error(saved):
    config = json.loads((saved / "config.json").read_text())
    config["languages"] = ["en_XX", "de_DE"]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="adapter_modules.fr_XX.*has no place"):
        XmodForMaskedLM.from_pretrained(saved)


def test_no_weights_file(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        XmodForMaskedLM.from_pretrained(tmp_path)


def test_pytorch_model_bin_is_read_weights_only(saved):
    model = XmodForMaskedLM.from_pretrained(saved).eval()
    state = load_file(saved / "model.safetensors")
    (saved / "model.safetensors").unlink()
    torch.save(OrderedDict(state), saved / "pytorch_model.bin")
    loaded = XmodForMaskedLM.from_pretrained(saved).eval()
    assert torch.equal(run(loaded), run(model))


def test_pickled_object_in_pytorch_model_bin_is_rejected_not_run(saved, tmp_path_factory):
    marker = tmp_path_factory.mktemp("marker") / "executed"
    state = dict(load_file(saved / "model.safetensors"))
    state["payload"] = WritesAFile(marker)
    (saved / "model.safetensors").unlink()
    torch.save(state, saved / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: cannot be read as a weights-only"):
        XmodForMaskedLM.from_pretrained(saved)
    assert not marker.exists()
