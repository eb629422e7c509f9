"""XmodConfig: the encoder's shape, with Hugging Face's field names and defaults, and its presets.

The dataclass is the single source of truth for the architecture. It reads and writes the
same ``config.json`` as ``transformers.XmodConfig`` (``"model_type": "xmod"``), so a checkpoint
directory is shared by both libraries. Keys we do not model (``architectures``,
``transformers_version`` ...) are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_text

CONFIG_NAME = "config.json"
LANGUAGE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


def validate_code(code: Any) -> str:
    """``code`` if it is a language code: 1 to 32 ASCII letters, digits, "_" or "-", starting with a letter or digit
    (``de_DE``, ``sw``, ``zh-Hant``). Never a path, a space or a dot: codes name modules, files and directories.
    The one check every entry point uses (settings, config.json, add_language, import, rename, export)."""
    if isinstance(code, str) and LANGUAGE_CODE.fullmatch(code):
        return code
    shown = repr(code)
    if isinstance(code, str) and len(code) > 40:
        shown = repr(code[:40]) + f"... ({len(code)} characters)"
    raise ValueError(f"invalid language code {shown}: 1 to 32 letters, digits, '_' or '-', starting with a letter or "
                     "digit, e.g. de_DE")

# xmod-base's 81 languages in id order (XMOD.md); ids are positions, so this order is fixed.
XMOD_BASE_LANGUAGES = (
    "en_XX id_ID vi_VN ru_RU fa_IR sv_SE ja_XX fr_XX de_DE ro_RO ko_KR hu_HU es_XX fi_FI uk_UA "
    "da_DK pt_XX no_XX th_TH pl_PL bg_BG nl_XX zh_CN he_IL el_GR it_IT sk_SK hr_HR tr_TR ar_AR "
    "cs_CZ lt_LT hi_IN zh_TW ca_ES ms_MY sl_SI lv_LV ta_IN bn_IN et_EE az_AZ sq_AL sr_RS kk_KZ "
    "ka_GE tl_XX ur_PK is_IS hy_AM ml_IN mk_MK be_BY la_VA te_IN eu_ES gl_ES mn_MN kn_IN ne_NP "
    "sw_KE si_LK mr_IN af_ZA gu_IN cy_GB eo_EO km_KH ky_KG uz_UZ ps_AF pa_IN ga_IE ha_NG am_ET "
    "lo_LA ku_TR so_SO my_MM or_IN sa_IN"
).split()


@dataclass
class XmodConfig:
    """Architecture of an X-Mod encoder. Field names and defaults follow transformers' XmodConfig."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    classifier_dropout: float | None = None
    pre_norm: bool = False
    adapter_reduction_factor: int = 2
    adapter_layer_norm: bool = False
    adapter_reuse_layer_norm: bool = True
    ln_before_adapter: bool = True
    languages: list[str] = field(default_factory=lambda: ["en_XX"])
    default_language: str | None = None
    tie_word_embeddings: bool = True
    # xmodlm extension, ignored by transformers (which loads such a checkpoint as identical
    # per-language copies): one module object serves every language. This is the paper's
    # "shared" baseline: each language uses exactly as many parameters as in X-Mod.
    shared_module: bool = False
    # Task heads (transformers' PretrainedConfig fields); id2label fixes num_labels.
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "adapter_reduction_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a probability in [0, 1); got {value!r}")
        if isinstance(self.languages, str) or not self.languages:
            raise ValueError(f"languages must be a non-empty list of codes; got {self.languages!r}")
        bad = [code for code in self.languages if not str(code) or "." in str(code)]
        if bad:  # codes are module names: torch forbids "." and ""
            raise ValueError(f"invalid language codes {bad}: a code must be non-empty and contain no '.'")
        for code in self.languages:
            validate_code(code)
        self.languages = [str(code) for code in self.languages]
        if len(set(self.languages)) != len(self.languages):
            dupes = sorted({c for c in self.languages if self.languages.count(c) > 1})
            raise ValueError(f"languages must be unique; repeated: {dupes}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_size % self.adapter_reduction_factor:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by adapter_reduction_factor "
                f"{self.adapter_reduction_factor}"
            )
        if self.default_language is not None and self.default_language not in self.languages:
            raise ValueError(
                f"default_language {self.default_language!r} is not one of the model's languages {self.languages}"
            )
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}

    # -- task heads ---------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in (self.id2label or {0: "LABEL_0", 1: "LABEL_1"}).items()}

    @property
    def adapter_size(self) -> int:
        return self.hidden_size // self.adapter_reduction_factor

    def vocab_range(self, code: str) -> tuple[int, int]:
        """The vocabulary rows [start, stop) of ``code``'s masked-LM softmax: every row, unless an addition kept it
        to the rows that existed before (``extra["language_vocab_sizes"]``) or gave it rows of its own (with
        ``extra["language_vocab_starts"]``; see xmodlm.vocab)."""
        sizes, starts = self.extra.get("language_vocab_sizes", {}), self.extra.get("language_vocab_starts", {})
        return int(starts.get(code, 0)), min(int(sizes.get(code, self.vocab_size)), self.vocab_size)

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "id2label")}
        d["languages"] = list(self.languages)
        out = {**self.extra, **d, "model_type": "xmod"}
        id2label = self.id2label or {0: "LABEL_0", 1: "LABEL_1"}
        out["id2label"] = {str(k): v for k, v in id2label.items()}
        out["label2id"] = {v: k for k, v in id2label.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> "XmodConfig":
        d = {**d, **overrides}
        model_type = d.get("model_type", "xmod")
        if model_type != "xmod":
            raise ValueError(f"config has model_type {model_type!r}; expected 'xmod'")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        derived = ("model_type", "label2id", "num_labels", "extra")
        extra = {k: v for k, v in d.items() if k not in names and k not in derived}
        if "num_labels" in d and "id2label" not in d:
            known["id2label"] = {i: f"LABEL_{i}" for i in range(int(d["num_labels"]))}
        return cls(**known, extra=extra)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / CONFIG_NAME, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> "XmodConfig":
        """The config.json of a local checkpoint directory. A hub id is fetched by the model classes'
        from_pretrained (or ``xmodlm.weights.resolve_pretrained``, which returns the local directory)."""
        path = Path(directory) / CONFIG_NAME
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"{directory}: not a checkpoint directory (for a hub id, pass "
                                    "xmodlm.weights.resolve_pretrained(name) or load the model class)")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no config.json in this checkpoint directory") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        return cls.from_dict(d, **overrides)


PRESETS: dict[str, dict[str, Any]] = {
    # For tests and demos: runs in milliseconds on a CPU.
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=130, type_vocab_size=1, layer_norm_eps=1e-5),
    # For laptop-scale pre-training (benchmarks use this shape: 4 x 256).
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                  max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5),
    # facebook/xmod-base's shape.
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, vocab_size=250002),
    # The paper's large pre-norm model: 24 x 1024, bottleneck 256.
    "large-prenorm": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                          max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                          vocab_size=250002, pre_norm=True, adapter_reduction_factor=4,
                          adapter_layer_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=False),
}


def preset(name: str, **overrides: Any) -> XmodConfig:
    """A named architecture (``tiny``, ``small``, ``base``, ``large-prenorm``) with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return XmodConfig(**{**PRESETS[name], **overrides})
