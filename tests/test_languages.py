"""Tests for xmodlm.languages: module files (export / import, compatibility and fingerprint checks),
remove / rename (other languages bit-identical; checkpoints load in xmodlm and in transformers),
language identification on real NTREX sentences, and the summary table. Tiny models: 2 layers,
width 32, vocab 100, 3 languages."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from xmodlm.config import preset
from xmodlm.languages import (ARCH_FIELDS, RELATED, UNDETERMINED, closest_languages, code_for_iso,
                              detect_languages, export_language, identify_languages, import_language,
                              language_table, read_language_file, remove_language, rename_language,
                              resolve_auto_lang_ids, shared_fingerprint, supported_languages)
from xmodlm.model import XmodForMaskedLM

LANGS = ["en_XX", "de_DE", "fr_XX"]
# /work/main/tests/test_languages.py -> parents[2] is the folder that holds the checkout.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny(seed: int = 0, languages=LANGS, **overrides) -> XmodForMaskedLM:
    torch.manual_seed(seed)
    model = XmodForMaskedLM(preset("tiny", vocab_size=100, languages=list(languages), **overrides))
    return model.eval()


def batch(n: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 100, (n, 9), generator=g)  # ids 0..2 are <s> <pad> </s>: no padding


@torch.no_grad()
def logits(model, lang, ids=None) -> torch.Tensor:
    return model(batch() if ids is None else ids, lang_ids=lang).logits


# ---------------------------------------------------------------------------------------
# Module files
# ---------------------------------------------------------------------------------------
def test_export_writes_small_file_with_metadata(tmp_path):
    model = tiny()
    path = export_language(model, "de_DE", tmp_path)
    assert path == tmp_path / "de_DE.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["de_DE.safetensors"]  # no temp file left behind
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert keys == {f"layer.{i}.dense{j}.{w}" for i in range(2) for j in (1, 2) for w in ("weight", "bias")}
    assert meta["code"] == "de_DE" and json.loads(meta["hidden_size"]) == 32
    assert json.loads(meta["adapter_size"]) == 16 and json.loads(meta["pre_norm"]) is False
    assert json.loads(meta["source_languages"]) == LANGS
    assert meta["shared_fingerprint"] == shared_fingerprint(model).shared
    assert all(isinstance(v, str) for v in meta.values())


def test_export_is_atomic(tmp_path, monkeypatch):
    model = tiny()
    path = export_language(model, "de_DE", tmp_path / "m.safetensors")
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with torch.no_grad():
        model.roberta.encoder.layer[0].output.adapter_modules["de_DE"].dense1.weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        export_language(model, "de_DE", path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_import_round_trip_under_own_and_new_code(tmp_path):
    source = tiny()
    expected = logits(source, "de_DE")
    path = export_language(source, "de_DE", tmp_path / "de.safetensors")

    target = copy.deepcopy(source)
    remove_language(target, "de_DE")
    assert import_language(target, path) == 2  # appended: the next free id
    assert target.config.languages == ["en_XX", "fr_XX", "de_DE"]
    assert torch.equal(logits(target, "de_DE"), expected)
    assert import_language(target, path, code="de_CH") == 3
    assert torch.equal(logits(target, "de_CH"), expected)
    for code in ("en_XX", "fr_XX"):
        assert torch.equal(logits(target, code), logits(source, code))


def test_import_existing_code_needs_replace(tmp_path):
    source = tiny()
    path = export_language(source, "de_DE", tmp_path / "de.safetensors")
    target = copy.deepcopy(source)
    with torch.no_grad():
        target.roberta.encoder.layer[1].output.adapter_modules["de_DE"].dense2.bias.add_(0.5)
    with pytest.raises(ValueError, match=r"'de_DE' is already in the model \(id 1\).*replace=True"):
        import_language(target, path)
    assert import_language(target, path, replace=True) == 1  # keeps its id
    assert target.config.languages == LANGS
    assert torch.equal(logits(target, "de_DE"), logits(source, "de_DE"))


@pytest.mark.parametrize("overrides, field", [
    (dict(hidden_size=64), "hidden_size"),
    (dict(num_hidden_layers=3), "num_hidden_layers"),
    (dict(adapter_reduction_factor=4), "adapter_reduction_factor"),
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(ln_before_adapter=False), "ln_before_adapter"),
    (dict(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False), "pre_norm"),
])
def test_import_incompatible_names_property_and_both_values(tmp_path, overrides, field):
    path = export_language(tiny(), "de_DE", tmp_path / "de.safetensors")
    target = tiny(languages=["en_XX"], **overrides)
    with pytest.raises(ValueError, match=field) as err:
        import_language(target, path, force=True)  # force skips the fingerprint only
    ours = getattr(target.config, field)
    assert f"file {getattr(preset('tiny'), field)!r}, model {ours!r}" in str(err.value)
    assert target.config.languages == ["en_XX"]  # nothing changed


def test_fingerprint_mismatch_is_error_unless_forced(tmp_path):
    source = tiny(seed=0)
    path = export_language(source, "de_DE", tmp_path / "de.safetensors")

    other = tiny(seed=1, languages=["en_XX"])
    with pytest.raises(ValueError, match="fingerprint differs.*embeddings differ too.*force=True"):
        import_language(other, path)
    assert other.config.languages == ["en_XX"]
    assert import_language(other, path, force=True) == 1

    finetuned = copy.deepcopy(source)  # fine-tuning moves attention / FFN, not the embeddings
    remove_language(finetuned, "de_DE")
    with torch.no_grad():
        finetuned.roberta.encoder.layer[0].attention.self.query.weight.mul_(1.1)
    with pytest.raises(ValueError, match="embeddings match but the transformer weights differ"):
        import_language(finetuned, path)


def test_fingerprint_covers_shared_weights_only():
    model = tiny()
    base = shared_fingerprint(model)
    changed = copy.deepcopy(model)
    with torch.no_grad():  # a module, the pooler-free MLM head: not covered
        changed.roberta.encoder.layer[0].output.adapter_modules["en_XX"].dense1.weight.add_(1)
        changed.lm_head.dense.weight.add_(1)
    assert shared_fingerprint(changed) == base
    remove_language(changed, "fr_XX")  # other languages do not matter
    assert shared_fingerprint(changed) == base
    assert shared_fingerprint(copy.deepcopy(model).to(torch.bfloat16)) == base  # rounded to bf16 before hashing
    for name in ("embeddings.LayerNorm.bias", "encoder.layer.1.output.LayerNorm.weight",
                 "encoder.layer.1.intermediate.dense.bias"):
        changed = copy.deepcopy(model)
        with torch.no_grad():
            changed.roberta.get_parameter(name).add_(0.01)
        assert shared_fingerprint(changed).shared != base.shared, name


def test_import_rejects_foreign_or_incomplete_files(tmp_path):
    model = tiny()
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, foreign, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not an xmodlm language-module file"):
        import_language(model, foreign)
    with pytest.raises(FileNotFoundError, match="no such language-module file"):
        import_language(model, tmp_path / "missing.safetensors")

    path = export_language(model, "de_DE", tmp_path / "de.safetensors")
    meta, tensors = read_language_file(path)
    del tensors["layer.1.dense2.bias"]
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, broken, metadata=meta)
    with pytest.raises(ValueError, match=r"missing \['layer.1.dense2.bias'\]"):
        import_language(model, broken, code="de_CH")
    assert model.config.languages == LANGS
    with pytest.raises(ValueError, match="invalid language code"):
        import_language(model, path, code="de.CH")


def test_import_into_shared_module_model_is_error(tmp_path):
    path = export_language(tiny(), "de_DE", tmp_path / "de.safetensors")
    shared = tiny(languages=["en_XX"], shared_module=True)
    with pytest.raises(ValueError, match="shared-module"):
        import_language(shared, path, force=True)


# ---------------------------------------------------------------------------------------
# Remove and rename
# ---------------------------------------------------------------------------------------
def test_remove_language_keeps_others_bit_identical_and_maps_ids():
    model = tiny()
    model.set_default_language("de_DE")
    before = {c: logits(model, c) for c in ("en_XX", "fr_XX")}
    mixed = logits(model, torch.tensor([2, 0, 2, 0]))

    mapping = remove_language(model, "de_DE")
    assert mapping == {0: 0, 2: 1}
    assert model.config.languages == ["en_XX", "fr_XX"]
    assert model.config.default_language is None  # cleared, not replaced
    for layer in model.roberta.encoder.layer:
        assert list(layer.output.adapter_modules) == ["en_XX", "fr_XX"]
    for code, out in before.items():
        assert torch.equal(logits(model, code), out)  # codes keep working
    remapped = torch.tensor([mapping[i] for i in [2, 0, 2, 0]])
    assert torch.equal(logits(model, remapped), mixed)
    with pytest.raises(ValueError, match="default_language is not set"):
        logits(model, None)


def test_remove_errors():
    model = tiny(languages=["en_XX", "de_DE"])
    with pytest.raises(ValueError, match=r"unknown language 'xx_XX'; the model's languages: \['en_XX', 'de_DE'\]"):
        remove_language(model, "xx_XX")
    remove_language(model, "en_XX")
    with pytest.raises(ValueError, match="only language"):
        remove_language(model, "de_DE")


def test_rename_language_keeps_id_order_and_outputs():
    model = tiny()
    model.set_default_language("de_DE")
    before = {c: logits(model, c) for c in LANGS}
    assert rename_language(model, "de_DE", "de_CH") == 1
    assert model.config.languages == ["en_XX", "de_CH", "fr_XX"]
    assert model.config.default_language == "de_CH"
    for layer in model.roberta.encoder.layer:
        assert list(layer.output.adapter_modules) == ["en_XX", "de_CH", "fr_XX"]
    assert torch.equal(logits(model, "de_CH"), before["de_DE"])
    assert torch.equal(logits(model, 1), before["de_DE"])
    for code in ("en_XX", "fr_XX"):
        assert torch.equal(logits(model, code), before[code])
    with pytest.raises(ValueError, match="already in the model"):
        rename_language(model, "de_CH", "fr_XX")
    with pytest.raises(ValueError, match="unknown language 'de_DE'"):
        rename_language(model, "de_DE", "de_AT")
    with pytest.raises(ValueError, match="invalid language code"):
        rename_language(model, "de_CH", "")


def test_remove_and_rename_round_trip_through_checkpoints(tmp_path):
    """Reference: transformers' XmodForMaskedLM loads the edited checkpoint with no missing or unexpected
    keys and agrees with ours (float tolerance: a different implementation)."""
    from transformers import XmodForMaskedLM as HFXmodForMaskedLM

    model = tiny()
    remove_language(model, "en_XX")
    rename_language(model, "fr_XX", "fr_CA")
    model.save_pretrained(tmp_path)
    ids = batch()

    ours = XmodForMaskedLM.from_pretrained(tmp_path).eval()
    assert ours.config.languages == ["de_DE", "fr_CA"]
    for code in ("de_DE", "fr_CA"):
        assert torch.equal(logits(ours, code, ids), logits(model, code, ids))

    hf, info = HFXmodForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    hf.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    for lang_id, code in enumerate(["de_DE", "fr_CA"]):
        with torch.no_grad():
            ref = hf(input_ids=ids, lang_ids=torch.full((ids.shape[0],), lang_id)).logits
        torch.testing.assert_close(logits(model, code, ids), ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Language identification
# ---------------------------------------------------------------------------------------
def ntrex(code: str, n: int = 50) -> list[str]:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA} (the shared data folder next to the checkout)")
    lines = (DATA / "ntrex" / f"{code}.txt").read_text(encoding="utf-8").splitlines()
    return lines[100:100 + n]  # past the headline-heavy start


NTREX = ["en_XX", "de_DE", "fr_XX", "es_XX", "ru_RU", "zh_CN", "ar_AR", "hi_IN", "id_ID", "ko_KR", "th_TH",
         "tr_TR", "vi_VN", "sw_KE", "fi_FI", "ka_GE", "ta_IN"]


@pytest.mark.parametrize("restrict", [False, True])
def test_identification_accuracy_on_ntrex(restrict):
    for code in NTREX:
        texts = ntrex(code)
        chosen = identify_languages(texts, NTREX, fallback="closest", restrict=restrict)
        accuracy = sum(c == code for c in chosen) / len(texts)
        assert accuracy >= 0.9, (code, accuracy, [c for c in chosen if c != code])


def test_code_mapping_rules():
    assert code_for_iso("zh", ["en_XX", "zh_TW", "zh_CN"]) == "zh_CN"
    assert code_for_iso("zh", ["en_XX", "zh_TW"]) == "zh_TW"
    assert code_for_iso("yue", ["zh_TW", "en_XX"]) == "zh_TW"  # variety -> macro-language
    assert code_for_iso("arz", ["ar_AR"]) == "ar_AR"
    assert code_for_iso("de", ["en_XX", "de_CH", "de_DE"]) == "de_CH"  # lowest id
    assert code_for_iso("ca", ["en_XX", "es_XX"]) is None
    assert closest_languages("es", ["en_XX", "fr_XX", "it_IT", "pt_XX"]) == ["pt_XX", "it_IT", "fr_XX"]
    assert closest_languages("ca_ES", ["en_XX", "es_XX"]) == ["es_XX"]
    assert all(k.isalpha() and k.islower() and k not in v for k, v in RELATED.items())
    assert "de" in supported_languages() and "zxx" not in supported_languages()


def test_unknown_language_is_error_naming_it():
    texts = ntrex("en_XX", 2) + ntrex("fr_XX", 3)
    with pytest.raises(ValueError) as err:
        identify_languages(texts, ["en_XX", "de_DE"])
    message = str(err.value)
    assert "3 of 5 texts" in message and "detected 'fr' (X-Mod code fr_XX)" in message
    assert "['en_XX', 'de_DE']" in message and "fallback" in message
    with pytest.raises(ValueError, match="no language detected"):
        identify_languages(["12345 !!", ""], ["en_XX"])
    assert detect_languages(["", " , ", "123"]) == [UNDETERMINED] * 3


def test_fallbacks():
    es, ru, ka, en = ntrex("es_XX", 5), ntrex("ru_RU", 5), ntrex("ka_GE", 5), ntrex("en_XX", 5)
    model_langs = ["de_DE", "en_XX", "pt_XX", "it_IT", "uk_UA"]
    assert identify_languages(es, model_langs, fallback="closest") == ["pt_XX"] * 5
    assert identify_languages(ru, model_langs, fallback="closest") == ["uk_UA"] * 5
    assert identify_languages(es, model_langs, fallback="de_DE") == ["de_DE"] * 5
    assert identify_languages(en, model_langs, fallback="de_DE") == ["en_XX"] * 5  # detected: no fallback
    # Georgian has no relative: default language, then en_XX, then id 0.
    assert identify_languages(ka, model_langs, fallback="closest", default_language="it_IT") == ["it_IT"] * 5
    assert identify_languages(ka, model_langs, fallback="closest") == ["en_XX"] * 5
    assert identify_languages(ka + [""], ["de_DE", "fr_XX"], fallback="closest") == ["de_DE"] * 6
    with pytest.raises(ValueError, match="neither 'closest' nor one of the model's languages"):
        identify_languages(es, model_langs, fallback="es_XX")


def test_restricted_detection():
    # Restricted: a French text must become one of the model's languages, never an error.
    chosen = identify_languages(ntrex("fr_XX", 5), ["en_XX", "de_DE", "es_XX"], restrict=True)
    assert set(chosen) <= {"en_XX", "de_DE", "es_XX"}
    with pytest.raises(ValueError, match=r"unknown: \['syn_a'\]"):
        identify_languages(["hello"], ["en_XX", "syn_a"], restrict=True)


def test_resolve_auto_lang_ids_uses_model_config():
    model = tiny()
    texts = [ntrex("de_DE", 1)[0], ntrex("fr_XX", 1)[0], (ntrex("en_XX", 1)[0], ntrex("en_XX", 2)[1])]
    codes = resolve_auto_lang_ids(texts, model)
    assert codes == ["de_DE", "fr_XX", "en_XX"]
    model(batch(3), lang_ids=codes)  # the model accepts the codes as lang_ids
    model.set_default_language("fr_XX")
    assert resolve_auto_lang_ids(ntrex("ka_GE", 1), model.config, fallback="closest") == ["fr_XX"]


# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
def test_language_table():
    model = tiny()
    model.set_default_language("fr_XX")
    per_language = 2 * (32 * 16 + 16 + 16 * 32 + 32)  # 2 layers x (dense1 + dense2)
    assert language_table(model) == [
        {"id": 0, "code": "en_XX", "parameters": per_language, "default": False, "shared": False},
        {"id": 1, "code": "de_DE", "parameters": per_language, "default": False, "shared": False},
        {"id": 2, "code": "fr_XX", "parameters": per_language, "default": True, "shared": False},
    ]
    shared = language_table(tiny(shared_module=True))
    assert [r["parameters"] for r in shared] == [per_language] * 3 and all(r["shared"] for r in shared)
    assert set(ARCH_FIELDS) >= {"hidden_size", "num_hidden_layers", "adapter_reduction_factor", "pre_norm"}
