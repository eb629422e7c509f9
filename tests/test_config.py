"""XmodConfig: config.json round trips, compatibility with transformers.XmodConfig, presets, validation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers

from xmodlm.config import PRESETS, XMOD_BASE_LANGUAGES, XmodConfig, preset
from xmodlm.model import XmodForMaskedLM, XmodModel, XmodPreTrainedModel

FIELDS = [f.name for f in dataclasses.fields(XmodConfig) if f.name not in ("extra", "id2label")]
# shared_module is an xmodlm extension (the shared baseline); transformers does not model it.
HF_FIELDS = [name for name in FIELDS if name != "shared_module"]


def custom_config() -> XmodConfig:
    """Every field away from its default, so a dropped or renamed field shows."""
    return XmodConfig(
        vocab_size=123, hidden_size=48, num_hidden_layers=3, num_attention_heads=6, intermediate_size=96,
        hidden_act="gelu_new", hidden_dropout_prob=0.05, attention_probs_dropout_prob=0.07,
        max_position_embeddings=66, type_vocab_size=1, initializer_range=0.03, layer_norm_eps=1e-5,
        pad_token_id=3, bos_token_id=4, eos_token_id=5, classifier_dropout=0.2, pre_norm=True,
        adapter_reduction_factor=4, adapter_layer_norm=True, adapter_reuse_layer_norm=False,
        ln_before_adapter=False, languages=["sw_KE", "en_XX", "de_DE"], default_language="en_XX",
        tie_word_embeddings=False, shared_module=True, id2label={0: "neg", 1: "neu", 2: "pos"},
        problem_type="single_label_classification",
    )


def test_config_json_round_trip(tmp_path):
    config = custom_config()
    config.save_pretrained(tmp_path)
    loaded = XmodConfig.from_pretrained(tmp_path)
    assert loaded == config
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "xmod" and data["label2id"] == {"neg": 0, "neu": 1, "pos": 2}


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    config = XmodConfig.from_dict({**XmodConfig().to_dict(), "transformers_version": "5.24.0", "use_cache": True})
    assert config.extra == {"transformers_version": "5.24.0", "use_cache": True}
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["transformers_version"] == "5.24.0" and data["use_cache"] is True


def test_transformers_reads_our_config(tmp_path):
    """Reference: transformers.XmodConfig.from_pretrained on our config.json."""
    config = custom_config()
    config.save_pretrained(tmp_path)
    ref = transformers.XmodConfig.from_pretrained(tmp_path)
    for name in HF_FIELDS:
        assert getattr(ref, name) == getattr(config, name), name
    assert ref.id2label == config.id2label and ref.num_labels == 3


def test_we_read_transformers_config(tmp_path):
    """Reference: a config.json written by transformers.XmodConfig.save_pretrained."""
    mine = custom_config()
    ref = transformers.XmodConfig(**{name: getattr(mine, name) for name in HF_FIELDS}, id2label=mine.id2label)
    ref.save_pretrained(tmp_path)
    loaded = XmodConfig.from_pretrained(tmp_path)
    assert loaded.shared_module is False  # absent from a transformers config: a per-language model
    for name in HF_FIELDS:
        assert getattr(loaded, name) == getattr(mine, name), name
    assert loaded.id2label == mine.id2label and loaded.num_labels == 3


def test_transformers_defaults_are_ours(tmp_path):
    """Reference: transformers.XmodConfig() defaults (XMOD.md lists them)."""
    ref = transformers.XmodConfig()
    ours = XmodConfig()
    for name in HF_FIELDS:
        if name == "problem_type":
            continue
        value = list(getattr(ref, name)) if name == "languages" else getattr(ref, name)
        assert value == getattr(ours, name), name
    ref.save_pretrained(tmp_path)  # transformers omits default labels: num_labels stays 2
    assert XmodConfig.from_pretrained(tmp_path).num_labels == 2


def test_num_labels_without_id2label():
    config = XmodConfig.from_dict({"num_labels": 4})
    assert config.num_labels == 4 and config.id2label == {i: f"LABEL_{i}" for i in range(4)}


@pytest.fixture
def no_init(monkeypatch):
    """Skip our weight initialisation: on the meta device it only costs time (normal_ runs
    through torch's Python reference implementation there), and counts do not depend on it."""
    monkeypatch.setattr(XmodPreTrainedModel, "_init_module", lambda self, module: None)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build(name, no_init):
    """Every preset builds an encoder; on the meta device so the large ones cost no memory."""
    config = preset(name, languages=["en_XX", "de_DE"])
    with torch.device("meta"):
        model = XmodModel(config)
    assert len(model.encoder.layer) == config.num_hidden_layers
    assert (model.encoder.LayerNorm is not None) == config.pre_norm


def test_base_preset_has_xmod_base_parameter_counts(no_init):
    """Golden numbers from XMOD.md (facebook/xmod-base, 81 languages): 852.7M parameters,
    574.4M in modules, 7.09M per language (12 x 590,976), 278.3M shared. The 852.7M is the
    masked-LM model (decoder tied to the embeddings, no pooler)."""
    assert len(XMOD_BASE_LANGUAGES) == 81 and XMOD_BASE_LANGUAGES[0] == "en_XX" and XMOD_BASE_LANGUAGES[-1] == "sa_IN"
    with torch.device("meta"):
        model = XmodForMaskedLM(preset("base", languages=XMOD_BASE_LANGUAGES))
    per_layer = sum(p.numel() for p in model.roberta.encoder.layer[0].output.adapter_modules["en_XX"].parameters())
    assert per_layer == 590_976
    modules = sum(p.numel() for n, p in model.named_parameters() if ".adapter_modules." in n)
    total = model.num_parameters()
    assert modules == 81 * 12 * 590_976
    assert round(modules / 1e6, 1) == 574.4
    assert round(total / 1e6, 1) == 852.7
    assert round((total - modules) / 1e6, 1) == 278.3


def test_large_prenorm_preset_parameter_counts(no_init):
    """Golden numbers from XMOD.md (the paper's large pre-norm model, 81 languages): 1.58B, 12.6M per language."""
    with torch.device("meta"):
        model = XmodForMaskedLM(preset("large-prenorm", languages=XMOD_BASE_LANGUAGES))
    per_language = sum(p.numel() for n, p in model.named_parameters() if ".adapter_modules.en_XX." in n)
    assert round(per_language / 1e6, 1) == 12.6
    assert round(model.num_parameters() / 1e9, 2) == 1.58


def test_preset_overrides_and_unknown_preset():
    assert preset("tiny", vocab_size=77).vocab_size == 77
    with pytest.raises(ValueError, match="'huge'.*base"):
        preset("huge")


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size 30"),
        (dict(hidden_size=32, num_attention_heads=4, adapter_reduction_factor=3), "adapter_reduction_factor 3"),
        (dict(num_attention_heads=0), "num_attention_heads"),
        (dict(adapter_reduction_factor=0), "adapter_reduction_factor"),
        (dict(num_hidden_layers=-1), "num_hidden_layers"),
        (dict(vocab_size=10.5), "vocab_size"),
        (dict(hidden_size="768"), "hidden_size"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(classifier_dropout=-0.1), "classifier_dropout"),
        (dict(languages=["en_XX", "de_DE", "en_XX"]), "'en_XX'"),
        (dict(languages="en_XX"), "'en_XX'"),
        (dict(languages=[]), "languages"),
        (dict(languages=["en.XX"]), "en.XX"),
        (dict(languages=["en_XX"], default_language="de_DE"), "'de_DE'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_values_name_the_field(kwargs, named):
    with pytest.raises(ValueError) as err:
        XmodConfig(**kwargs)
    assert named in str(err.value)


def test_bad_config_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        XmodConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_size": 32,\n "languages": [}')
    with pytest.raises(ValueError, match="config.json: invalid JSON at line 2"):
        XmodConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert'"):
        XmodConfig.from_pretrained(tmp_path)


def test_unsupported_activation_is_named():
    with pytest.raises(ValueError, match="'mish'"):
        XmodModel(preset("tiny", hidden_act="mish"))
