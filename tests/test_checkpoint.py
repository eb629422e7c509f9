"""The fairseq import (xmodlm.checkpoint.convert_fairseq): names, layouts, pickle safety. Reading and
writing Hugging Face directories is tests/test_weights.py.

Tiny random models (2 layers, width 32, vocab 100, 3 languages), float32, eval mode, dropout
off; outputs compared with max abs diff <= 1e-5.
"""

from __future__ import annotations

import argparse
import enum
import os
from collections import OrderedDict

import pytest
import torch
import transformers

from xmodlm.checkpoint import FAIRSEQ_TO_HF, convert_fairseq, fairseq_to_hf_name, load_checkpoint_safely
from tiny import LANGS, TOL, WritesAFile, inputs, ours
from xmodlm.model import XmodForMaskedLM

PRE_NORM = dict(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=False,
                adapter_reduction_factor=4)


class RunsAShell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


# ---------------------------------------------------------------------------------------
# fairseq import
# ---------------------------------------------------------------------------------------
class Meter:
    """Stands for fairseq's training-state classes (meters) that weights_only refuses."""

    def __init__(self):
        self.sum, self.count = 3.5, torch.tensor(7)


class Phase(enum.Enum):
    TRAIN = "train"


def fairseq_state(model: XmodForMaskedLM, module_names: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Our model's tensors under fairseq's names, written out from XMOD.md independently of
    FAIRSEQ_TO_HF. ``module_names`` renames a language's modules (code -> fairseq key)."""
    sd = model.state_dict()
    cfg = model.config
    E = "encoder.sentence_encoder."
    fs = OrderedDict()
    fs[E + "version"] = torch.tensor([2.0])  # fairseq bookkeeping, ignored
    fs[E + "embed_tokens.weight"] = sd["roberta.embeddings.word_embeddings.weight"]
    fs[E + "embed_positions.weight"] = sd["roberta.embeddings.position_embeddings.weight"]
    layer_pairs = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
                   "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
                   "self_attn_layer_norm": "attention.output.LayerNorm", "fc1": "intermediate.dense",
                   "fc2": "output.dense", "final_layer_norm": "output.LayerNorm"}
    if cfg.adapter_layer_norm:
        layer_pairs["adapter_layer_norm"] = "output.adapter_layer_norm"
    for p in ("weight", "bias"):
        fs[E + f"layernorm_embedding.{p}"] = sd[f"roberta.embeddings.LayerNorm.{p}"]
    for i in range(cfg.num_hidden_layers):
        for p in ("weight", "bias"):
            for f_name, h_name in layer_pairs.items():
                fs[E + f"layers.{i}.{f_name}.{p}"] = sd[f"roberta.encoder.layer.{i}.{h_name}.{p}"]
        for code in cfg.languages:
            key = (module_names or {}).get(code, code)
            for f_name, h_name in (("fc1", "dense1"), ("fc2", "dense2")):
                for p in ("weight", "bias"):
                    fs[E + f"layers.{i}.adapter_modules.{key}.{f_name}.{p}"] = \
                        sd[f"roberta.encoder.layer.{i}.output.adapter_modules.{code}.{h_name}.{p}"]
    if cfg.pre_norm:
        for p in ("weight", "bias"):
            fs[E + f"layer_norm.{p}"] = sd[f"roberta.encoder.LayerNorm.{p}"]
    for p in ("weight", "bias"):
        fs[f"encoder.lm_head.dense.{p}"] = sd[f"lm_head.dense.{p}"]
        fs[f"encoder.lm_head.layer_norm.{p}"] = sd[f"lm_head.layer_norm.{p}"]
    fs["encoder.lm_head.weight"] = sd["lm_head.decoder.weight"]
    fs["encoder.lm_head.bias"] = sd["lm_head.bias"]
    return {k: v.clone() for k, v in fs.items()}


def fairseq_model(**overrides) -> XmodForMaskedLM:
    """A model that a fairseq checkpoint can express: no token types (fairseq has none)."""
    model = ours(**overrides)
    with torch.no_grad():
        model.roberta.embeddings.token_type_embeddings.weight.zero_()
    return model


def model_args(model, **more):
    c = model.config
    args = dict(encoder_layers=c.num_hidden_layers, encoder_embed_dim=c.hidden_size,
                encoder_attention_heads=c.num_attention_heads, activation_fn="gelu", dropout=0.1,
                attention_dropout=0.1, encoder_normalize_before=c.pre_norm, adapter_modules=True,
                adapter_layer_norm=c.adapter_layer_norm, adapter_reuse_layer_norm=c.adapter_reuse_layer_norm,
                ln_before_adapter=c.ln_before_adapter, bottleneck=c.adapter_reduction_factor,
                languages=list(c.languages))
    return {**args, **more}


def assert_converted_matches(model, out_dir, langs=(2, 0, 1, 2)):
    """Reference: transformers.XmodForMaskedLM loads the converted directory with nothing missing;
    it, and ours, compute what the original model computes."""
    ref, info = transformers.XmodForMaskedLM.from_pretrained(out_dir, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and not info["mismatched_keys"]
    converted = XmodForMaskedLM.from_pretrained(out_dir).eval()
    ids, mask, _ = inputs()
    lang = torch.tensor(list(langs))
    with torch.no_grad():
        want = model(ids, attention_mask=mask, lang_ids=lang).logits
        assert (converted(ids, attention_mask=mask, lang_ids=lang).logits - want).abs().max() <= TOL
        assert (ref.eval()(input_ids=ids, attention_mask=mask, lang_ids=lang).logits - want).abs().max() <= TOL
    return converted.config


def test_fairseq_name_table_covers_xmod_md():
    """Spot checks of FAIRSEQ_TO_HF against XMOD.md's list."""
    cases = {
        "encoder.sentence_encoder.layers.11.self_attn.q_proj.weight":
            "roberta.encoder.layer.11.attention.self.query.weight",
        "encoder.sentence_encoder.layers.0.self_attn.out_proj.bias":
            "roberta.encoder.layer.0.attention.output.dense.bias",
        "encoder.sentence_encoder.layers.3.final_layer_norm.weight": "roberta.encoder.layer.3.output.LayerNorm.weight",
        "encoder.sentence_encoder.layers.2.adapter_modules.hi_IN.fc2.bias":
            "roberta.encoder.layer.2.output.adapter_modules.{lang}.dense2.bias",
        "encoder.sentence_encoder.layer_norm.weight": "roberta.encoder.LayerNorm.weight",
        "decoder.sentence_encoder.embed_tokens.weight": "roberta.embeddings.word_embeddings.weight",
        "encoder.lm_head.weight": "lm_head.decoder.weight",
        "encoder.lm_head.bias": "lm_head.bias",
    }
    for fairseq, hf in cases.items():
        assert fairseq_to_hf_name(fairseq)[0] == hf, fairseq
    assert fairseq_to_hf_name("encoder.sentence_encoder.layers.2.adapter_modules.hi_IN.fc2.bias")[1] == "hi_IN"
    assert fairseq_to_hf_name("encoder.sentence_encoder.layers.0.self_attn.in_proj_weight") is None
    assert len({hf for _, hf in FAIRSEQ_TO_HF}) == len(FAIRSEQ_TO_HF) - 1  # one alias: emb_layer_norm


def test_convert_post_norm_hydra_checkpoint(tmp_path):
    """A hydra-era checkpoint: cfg['model'] as a dict, training state of fairseq's own classes."""
    model = fairseq_model()
    checkpoint = {
        "args": None,
        "cfg": {"model": model_args(model), "task": {"_name": "multilingual_masked_lm"}},
        "model": fairseq_state(model),
        "optimizer_history": [{"criterion_name": "MaskedLmLoss", "num_updates": 10}],
        "extra_state": {"metrics": OrderedDict(train=Meter()), "phase": Phase.TRAIN},
    }
    torch.save(checkpoint, tmp_path / "model.pt")
    out = convert_fairseq(tmp_path / "model.pt", tmp_path / "hf")
    assert out == tmp_path / "hf"
    config = assert_converted_matches(model, out)
    assert config.languages == LANGS and config.num_attention_heads == 4 and not config.pre_norm
    assert config.max_position_embeddings == 130 and config.type_vocab_size == 1 and config.tie_word_embeddings
    assert config.hidden_dropout_prob == 0.1


def test_convert_pre_norm_argparse_legacy_checkpoint(tmp_path):
    """An argparse-era checkpoint (args Namespace), in torch's legacy (non-zip) format."""
    model = fairseq_model(**PRE_NORM)
    checkpoint = {"args": argparse.Namespace(**model_args(model), arch="xmod_large_prenorm"),
                  "model": fairseq_state(model), "extra_state": {"metrics": {"train": Meter()}}}
    torch.save(checkpoint, tmp_path / "model.pt", _use_new_zipfile_serialization=False)
    config = assert_converted_matches(model, convert_fairseq(tmp_path / "model.pt", tmp_path / "hf"))
    assert config.pre_norm and config.adapter_layer_norm and config.adapter_reduction_factor == 4
    assert not config.ln_before_adapter and not config.adapter_reuse_layer_norm


def test_convert_omegaconf_checkpoint(tmp_path):
    """cfg as an omegaconf DictConfig, read through placeholders without importing omegaconf."""
    omegaconf = pytest.importorskip("omegaconf")
    model = fairseq_model(**PRE_NORM)
    cfg = omegaconf.OmegaConf.create({"model": model_args(model), "common": {"fp16": True}})
    torch.save({"cfg": cfg, "model": fairseq_state(model)}, tmp_path / "model.pt")
    config = assert_converted_matches(model, convert_fairseq(tmp_path / "model.pt", tmp_path / "hf"))
    assert config.languages == LANGS and config.num_attention_heads == 4 and not config.ln_before_adapter


def test_convert_without_config_reads_languages_from_modules(tmp_path, caplog):
    """A bare state dict: languages in the modules' stored order, flags as in xmod-base."""
    model = fairseq_model()
    torch.save({"model": fairseq_state(model)}, tmp_path / "model.pt")
    with caplog.at_level("WARNING", logger="xmodlm.checkpoint"):
        out = convert_fairseq(tmp_path / "model.pt", tmp_path / "hf", num_attention_heads=4)
    config = assert_converted_matches(model, out)
    assert config.languages == LANGS
    assert "no model config" in caplog.text


def test_convert_strips_fairseq_language_suffixes(tmp_path):
    """fairseq looks modules up with '_rom'/'_zaw' removed from the code."""
    model = fairseq_model(languages=["en_XX", "ur_PK", "my_MM"])
    state = fairseq_state(model, module_names={"my_MM": "my_MM_zaw"})
    args = model_args(model, languages=["en_XX", "ur_PK", "ur_PK_rom", "my_MM_zaw"])
    torch.save({"args": argparse.Namespace(**args), "model": state}, tmp_path / "model.pt")
    config = assert_converted_matches(model, convert_fairseq(tmp_path / "model.pt", tmp_path / "hf"))
    assert config.languages == ["en_XX", "ur_PK", "my_MM"]


def test_convert_explicit_languages_reorders_and_selects(tmp_path):
    model = fairseq_model()
    torch.save({"args": argparse.Namespace(**model_args(model)), "model": fairseq_state(model)}, tmp_path / "m.pt")
    out = convert_fairseq(tmp_path / "m.pt", tmp_path / "hf", languages=["fr_XX", "en_XX"])
    converted = XmodForMaskedLM.from_pretrained(out).eval()
    assert converted.config.languages == ["fr_XX", "en_XX"]
    ids, mask, _ = inputs()
    with torch.no_grad():
        for code in ("fr_XX", "en_XX"):
            assert (converted(ids, attention_mask=mask, lang_ids=code).logits
                    - model(ids, attention_mask=mask, lang_ids=code).logits).abs().max() <= TOL
    with pytest.raises(ValueError, match=r"no modules for languages \['sw_KE'\].*'de_DE'"):
        convert_fairseq(tmp_path / "m.pt", tmp_path / "hf2", languages=["en_XX", "sw_KE"])


def test_convert_untied_lm_head(tmp_path):
    model = fairseq_model()
    state = fairseq_state(model)
    state["encoder.lm_head.weight"] = state["encoder.lm_head.weight"] + 0.5
    torch.save({"args": argparse.Namespace(**model_args(model)), "model": state}, tmp_path / "m.pt")
    out = convert_fairseq(tmp_path / "m.pt", tmp_path / "hf")
    converted = XmodForMaskedLM.from_pretrained(out)
    assert not converted.config.tie_word_embeddings
    assert torch.equal(converted.lm_head.decoder.weight, state["encoder.lm_head.weight"])
    assert torch.equal(converted.roberta.embeddings.word_embeddings.weight,
                       state["encoder.sentence_encoder.embed_tokens.weight"])


def test_convert_rejects_unmapped_tensors(tmp_path):
    model = fairseq_model()
    state = fairseq_state(model)
    state["encoder.sentence_encoder.layers.0.ffn_modules.en_XX.fc1.weight"] = torch.zeros(2, 2)
    state["classification_heads.xnli.dense.weight"] = torch.zeros(2, 2)  # ignored, not an error
    torch.save({"model": state}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m\.pt: tensors with no X-Mod equivalent.*ffn_modules"):
        convert_fairseq(tmp_path / "m.pt", tmp_path / "hf")


def test_convert_names_a_missing_tensor(tmp_path):
    model = fairseq_model()
    state = fairseq_state(model)
    del state["encoder.sentence_encoder.layers.1.adapter_modules.de_DE.fc2.bias"]
    torch.save({"args": argparse.Namespace(**model_args(model)), "model": state}, tmp_path / "m.pt")
    expected = r"missing \['roberta.encoder.layer.1.output.adapter_modules.de_DE.dense2.bias'"
    with pytest.raises(ValueError, match=expected):
        convert_fairseq(tmp_path / "m.pt", tmp_path / "hf")


def test_malicious_fairseq_checkpoint_is_refused_not_run(tmp_path):
    """A checkpoint naming os.system is refused; the command never runs."""
    model = fairseq_model()
    torch.save({"model": fairseq_state(model), "extra_state": RunsAShell()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt: refusing.*system"):
        convert_fairseq(tmp_path / "evil.pt", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_unknown_callables_become_inert_placeholders(tmp_path):
    """A callable outside the dangerous list is replaced, not called: the file is not created."""
    marker = tmp_path / "executed"
    torch.save({"model": {}, "x": WritesAFile(marker)}, tmp_path / "odd.pt")
    torch.save({"model": {}, "x": WritesAFile(marker)}, tmp_path / "odd_legacy.pt",
               _use_new_zipfile_serialization=False)
    for name in ("odd.pt", "odd_legacy.pt"):
        loaded = load_checkpoint_safely(tmp_path / name)
        assert "placeholder" in repr(loaded["x"])
    assert not marker.exists()


def test_unreadable_fairseq_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        convert_fairseq(tmp_path / "absent.pt", tmp_path / "hf")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable PyTorch checkpoint"):
        convert_fairseq(tmp_path / "junk.pt", tmp_path / "hf")
    torch.save({"model": {"encoder.sentence_encoder.embed_tokens.weight": torch.zeros(5, 4)}}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare\.pt: no language modules"):
        convert_fairseq(tmp_path / "bare.pt", tmp_path / "hf")


def test_convert_fairseq_command_line(tmp_path, capsys):
    """`xmodlm convert-fairseq CHECKPOINT --out DIR`: the positional checkpoint and the flags reach the converter."""
    from xmodlm.cli import main

    model = fairseq_model()
    torch.save({"cfg": {"model": model_args(model)}, "model": fairseq_state(model)}, tmp_path / "model.pt")
    assert main(["convert-fairseq", str(tmp_path / "model.pt"), "--out", str(tmp_path / "hf")]) == 0
    assert "converted" in capsys.readouterr().out
    assert_converted_matches(model, tmp_path / "hf")
    assert main(["convert-fairseq", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 1
    assert "missing.pt" in capsys.readouterr().err
