"""Checkpoint import: fairseq X-Mod checkpoints to Hugging Face-format directories, read safely.

Our directories and transformers' are the same files (model.py uses Hugging Face's parameter
names), so they need no conversion. fairseq uses other names: ``FAIRSEQ_TO_HF`` below is the
one name map of the project, a table to review against XMOD.md.

Reading a fairseq checkpoint safely. A fairseq ``model.pt`` is a pickle that holds, besides
tensors, an ``argparse.Namespace`` (``args``) or an omegaconf config, and training state made
of fairseq's own classes (meters, enums). ``torch.load(weights_only=True)`` refuses all of
those, and ``weights_only=False`` would run whatever the file names. We keep torch's
weights-only unpickler and tell it about the file's other globals:

* ``argparse.Namespace`` is allowed as itself (it only sets attributes);
* every other class or function the file names is replaced by an inert placeholder class
  that records the arguments and state it is given. The real object is never imported, so
  no code from the file runs; configs are read back from the placeholders' recorded state
  (this is how an omegaconf ``DictConfig`` is read without omegaconf);
* a file that names an obviously dangerous callable (``os.system``, ``builtins.eval``,
  ``subprocess`` ...) is refused outright: a model checkpoint has no reason to contain one.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

from .config import XmodConfig
from .model import XmodForMaskedLM

logger = logging.getLogger(__name__)

# fairseq name -> Hugging Face name (XmodForMaskedLM). {i}: layer index, {p}: weight|bias,
# {lang}: a language code. fairseq RoBERTa models once used "decoder." where X-Mod uses
# "encoder."; both are accepted (see _canonical).
_FS = "encoder.sentence_encoder."
_FL = _FS + "layers.{i}."
_HL = "roberta.encoder.layer.{i}."
FAIRSEQ_TO_HF: tuple[tuple[str, str], ...] = (
    (_FS + "embed_tokens.weight", "roberta.embeddings.word_embeddings.weight"),
    (_FS + "embed_positions.weight", "roberta.embeddings.position_embeddings.weight"),
    (_FS + "layernorm_embedding.{p}", "roberta.embeddings.LayerNorm.{p}"),
    (_FS + "emb_layer_norm.{p}", "roberta.embeddings.LayerNorm.{p}"),  # RoBERTa's older name
    (_FL + "self_attn.q_proj.{p}", _HL + "attention.self.query.{p}"),
    (_FL + "self_attn.k_proj.{p}", _HL + "attention.self.key.{p}"),
    (_FL + "self_attn.v_proj.{p}", _HL + "attention.self.value.{p}"),
    (_FL + "self_attn.out_proj.{p}", _HL + "attention.output.dense.{p}"),
    (_FL + "self_attn_layer_norm.{p}", _HL + "attention.output.LayerNorm.{p}"),
    (_FL + "fc1.{p}", _HL + "intermediate.dense.{p}"),
    (_FL + "fc2.{p}", _HL + "output.dense.{p}"),
    (_FL + "final_layer_norm.{p}", _HL + "output.LayerNorm.{p}"),
    (_FL + "adapter_layer_norm.{p}", _HL + "output.adapter_layer_norm.{p}"),
    (_FL + "adapter_modules.{lang}.fc1.{p}", _HL + "output.adapter_modules.{lang}.dense1.{p}"),
    (_FL + "adapter_modules.{lang}.fc2.{p}", _HL + "output.adapter_modules.{lang}.dense2.{p}"),
    (_FS + "layer_norm.{p}", "roberta.encoder.LayerNorm.{p}"),  # pre-norm models only
    ("encoder.lm_head.dense.{p}", "lm_head.dense.{p}"),
    ("encoder.lm_head.layer_norm.{p}", "lm_head.layer_norm.{p}"),
    ("encoder.lm_head.weight", "lm_head.decoder.weight"),  # tied to embed_tokens in released models
    ("encoder.lm_head.bias", "lm_head.bias"),
)
# Tensors with no meaning for inference: fairseq's bookkeeping and fine-tuning heads.
FAIRSEQ_IGNORED = re.compile(r"(^|\.)(version|_float_tensor)$|^classification_heads\.")
# fairseq strips these from a language code before looking up its module (transformer_layer_xmod.py).
LANGUAGE_SUFFIXES = ("_rom", "_zaw")
# fairseq's activation names -> our hidden_act.
ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "relu": "relu", "tanh": "tanh", "swish": "silu"}
# Callables no model checkpoint needs; naming one is the mark of a malicious file. (Configs
# do name harmless builtins such as builtins.int as types: those become placeholders.)
DANGEROUS_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "importlib", "runpy", "shutil", "socket", "pickle", "_pickle",
    "marshal", "ctypes", "code", "pty", "webbrowser", "multiprocessing", "signal", "asyncio",
}
DANGEROUS_BUILTINS = {
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "input", "breakpoint", "exit", "quit", "help",
}


def _dangerous(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    return module.split(".")[0] in DANGEROUS_MODULES or (module in ("builtins", "__builtin__")
                                                         and attr in DANGEROUS_BUILTINS)


def _compile(pattern: str) -> re.Pattern:
    groups = {"{i}": r"(?P<i>\d+)", "{p}": r"(?P<p>weight|bias)", "{lang}": r"(?P<lang>[^.]+)"}
    parts = re.split(r"(\{i\}|\{p\}|\{lang\})", pattern)
    return re.compile("".join(groups.get(part, re.escape(part)) for part in parts) + "$")


_RULES = [(_compile(fs), hf) for fs, hf in FAIRSEQ_TO_HF]


def fairseq_to_hf_name(name: str) -> tuple[str, str | None] | None:
    """The Hugging Face name of a fairseq tensor (with ``{lang}`` left in place) and its raw
    language (for a module tensor), or None if the table has no rule for it."""
    name = _canonical(name)
    for pattern, target in _RULES:
        m = pattern.match(name)
        if m:
            fields = m.groupdict()
            lang = fields.pop("lang", None)
            return target.format(**fields, lang="{lang}"), lang
    return None


def _canonical(name: str) -> str:
    return "encoder." + name[len("decoder."):] if name.startswith("decoder.") else name


def strip_language_suffix(code: str) -> str:
    for suffix in LANGUAGE_SUFFIXES:
        code = code.replace(suffix, "")
    return code


# ---------------------------------------------------------------------------------------
# Reading a checkpoint without running it
# ---------------------------------------------------------------------------------------
class Placeholder:
    """Stands in for a class or function that a checkpoint names; records, never runs."""

    _name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self):
        return f"<placeholder for {self._name}>"


def load_checkpoint_safely(path: str | os.PathLike) -> Any:
    """``torch.load`` with the weights-only unpickler; other globals become placeholders.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for one that
    is not a PyTorch checkpoint or that names a dangerous callable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    is_zip = zipfile.is_zipfile(path)
    allowed: dict[str, Any] = {"argparse.Namespace": argparse.Namespace}
    placeholders: dict[str, type] = {}

    def admit(names):
        for name in names:
            if name in allowed or name in placeholders:
                continue
            if _dangerous(name):
                raise ValueError(f"{path}: refusing to read this file: it references {name}, "
                                 "which no model checkpoint needs (it could run code when loaded)")
            placeholders[name] = type(name.rsplit(".", 1)[-1], (Placeholder,), {"_name": name})

    if is_zip:  # list the globals up front, without unpickling; legacy files go by trial below
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - any failure means: not a checkpoint we can read
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
        admit(names)
    for _ in range(100):
        safe = [argparse.Namespace, *((cls, name) for name, cls in placeholders.items())]
        try:
            with torch.serialization.safe_globals(safe):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
        except pickle.UnpicklingError as e:
            m = re.search(r"GLOBAL ([\w.]+)", str(e))
            if m is None or m.group(1) in placeholders:
                first = next((line for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                             str(e).splitlines()[0] if str(e) else "")
                raise ValueError(f"{path}: the weights-only reader refused this file ({first.strip()})") from None
            admit([m.group(1)])
        except Exception as e:  # noqa: BLE001 - torch's reader fails on junk with assorted errors
            raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    raise ValueError(f"{path}: names too many classes to read safely")


def plain(obj: Any) -> Any:
    """Namespaces and placeholder configs (omegaconf DictConfig/ListConfig) as dicts and lists."""
    if isinstance(obj, argparse.Namespace):
        return {k: plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Placeholder):
        state = obj.__dict__
        if "_content" in state:  # omegaconf containers keep their items in _content
            return plain(state["_content"])
        if "_val" in state:  # omegaconf value nodes
            return plain(state["_val"])
    return obj


def fairseq_model_args(checkpoint: Any) -> dict[str, Any]:
    """The model's hyper-parameters: ``cfg['model']`` (hydra era) or ``args`` (argparse era)."""
    if not isinstance(checkpoint, dict):
        return {}
    cfg = plain(checkpoint.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        return cfg["model"]
    args = plain(checkpoint.get("args"))
    return args if isinstance(args, dict) else {}


# ---------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------
def _resolve_languages(path: Path, module_order: list[str], configured: Sequence[str] | None,
                       explicit: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """Language codes in id order, and the fairseq module name each one reads from."""
    available: dict[str, str] = {}
    for raw in module_order:  # fairseq looks modules up by stripped code: an unsuffixed one wins
        code = strip_language_suffix(raw)
        if code not in available or raw == code:
            available[code] = raw
    requested = explicit if explicit is not None else configured if configured else module_order
    codes = list(dict.fromkeys(strip_language_suffix(str(c)) for c in requested))
    unknown = [c for c in codes if c not in available]
    if unknown:
        raise ValueError(f"{path}: no modules for languages {unknown}; the checkpoint has modules for "
                         f"{list(available)}")
    dropped = [c for c in available if c not in codes]
    if dropped:
        logger.warning("%s: not converting the modules of %s (not among the languages asked for)", path, dropped)
    return codes, {code: available[code] for code in codes}


def _infer_config(path: Path, tensors: dict[str, torch.Tensor], args: dict[str, Any], languages: list[str],
                  num_attention_heads: int | None) -> XmodConfig:
    def need(name):
        if name not in tensors:
            raise ValueError(f"{path}: missing tensor {name!r}; is this a fairseq X-Mod checkpoint?")
        return tensors[name]

    embed = need("roberta.embeddings.word_embeddings.weight")
    vocab, hidden = embed.shape
    layers = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"roberta\.encoder\.layer\.(\d+)\.", k))})
    if layers != list(range(len(layers))) or not layers:
        raise ValueError(f"{path}: encoder layers {layers} are not numbered 0..n-1")
    module = need(f"roberta.encoder.layer.0.output.adapter_modules.{languages[0]}.dense1.weight")
    if hidden % module.shape[0]:
        raise ValueError(f"{path}: module bottleneck {module.shape[0]} does not divide the width {hidden}")
    heads = num_attention_heads or args.get("encoder_attention_heads")
    if not heads:
        heads = max(1, hidden // 64)
        logger.warning("%s: no encoder_attention_heads in the checkpoint; assuming %d (head size 64)", path, heads)
    act = args.get("activation_fn") or "gelu"
    if act not in ACTIVATIONS:
        raise ValueError(f"{path}: activation_fn {act!r} has no equivalent; expected one of {sorted(ACTIVATIONS)}")
    if "roberta.embeddings.LayerNorm.weight" not in tensors:
        raise ValueError(f"{path}: no embedding LayerNorm (layernorm_embedding); transformers' X-Mod always "
                         "applies one, so this model cannot be represented")
    pre_norm = "roberta.encoder.LayerNorm.weight" in tensors
    adapter_layer_norm = "roberta.encoder.layer.0.output.adapter_layer_norm.weight" in tensors
    # Without a config, the flags default to the released models': base (post-norm) and the
    # paper's large pre-norm model.
    defaults = (dict(adapter_reuse_layer_norm=False, ln_before_adapter=False) if pre_norm
                else dict(adapter_reuse_layer_norm=True, ln_before_adapter=True))
    flags = {k: bool(args[k]) if args.get(k) is not None else v for k, v in defaults.items()}
    if not args:
        logger.warning("%s: no model config in the checkpoint; module norm flags assumed %s", path, flags)
    decoder = tensors.get("lm_head.decoder.weight")
    return XmodConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=int(heads),
        intermediate_size=need("roberta.encoder.layer.0.intermediate.dense.weight").shape[0],
        hidden_act=ACTIVATIONS[act],
        hidden_dropout_prob=float(args.get("dropout", 0.1)),
        attention_probs_dropout_prob=float(args.get("attention_dropout", 0.1)),
        max_position_embeddings=need("roberta.embeddings.position_embeddings.weight").shape[0],
        type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        pre_norm=pre_norm, adapter_reduction_factor=hidden // module.shape[0],
        adapter_layer_norm=adapter_layer_norm, languages=languages,
        tie_word_embeddings=decoder is None or torch.equal(decoder, embed), **flags,
    )


def convert_fairseq(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike,
                    languages: Sequence[str] | None = None, *, num_attention_heads: int | None = None) -> Path:
    """Convert a fairseq X-Mod ``model.pt`` into a Hugging Face directory (XmodForMaskedLM).

    ``languages``: the codes to convert, in id order (default: the checkpoint's
    ``languages``, else its modules in stored order); fairseq's ``_rom``/``_zaw`` suffixes are
    stripped. ``num_attention_heads`` overrides the checkpoint's (needed only when it has no
    config). The directory loads with ``xmodlm`` and ``transformers.XmodForMaskedLM`` alike.
    Classification heads and training state are not converted. Weights are written in float32.
    """
    path = Path(checkpoint_path)
    checkpoint = load_checkpoint_safely(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: no model state dict (expected a fairseq checkpoint with a 'model' entry)")
    args = fairseq_model_args(checkpoint)

    renamed: dict[str, tuple[str, str | None, torch.Tensor]] = {}  # fairseq name -> (hf name, raw lang, tensor)
    module_order: list[str] = []
    unmapped = []
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: model entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if FAIRSEQ_IGNORED.search(name):
            continue
        hit = fairseq_to_hf_name(name)
        if hit is None:
            unmapped.append(name)
            continue
        renamed[name] = (hit[0], hit[1], tensor)
        if hit[1] is not None and hit[1] not in module_order:
            module_order.append(hit[1])
    if unmapped:
        more = " ..." if len(unmapped) > 8 else ""
        raise ValueError(f"{path}: tensors with no X-Mod equivalent: {unmapped[:8]}{more}")
    if not module_order:
        raise ValueError(f"{path}: no language modules (adapter_modules); not an X-Mod checkpoint")

    configured = args.get("languages")
    if isinstance(configured, str):  # fairseq's command line takes a comma-separated list
        configured = configured.split(",")
    codes, source = _resolve_languages(path, module_order, configured, languages)
    wanted = {raw: code for code, raw in source.items()}
    tensors: dict[str, torch.Tensor] = {}
    for name, (target, raw, tensor) in renamed.items():
        if raw is not None:
            if raw not in wanted:
                continue
            target = target.replace("{lang}", wanted[raw])
        if target in tensors:
            raise ValueError(f"{path}: {name!r} and another tensor both map to {target!r}")
        tensors[target] = tensor.float() if tensor.is_floating_point() else tensor

    config = _infer_config(path, tensors, args, codes, num_attention_heads)
    hidden = config.hidden_size
    tensors["roberta.embeddings.token_type_embeddings.weight"] = torch.zeros(1, hidden)  # fairseq has none
    if config.tie_word_embeddings:
        tensors["lm_head.decoder.weight"] = tensors["roberta.embeddings.word_embeddings.weight"]
    if "lm_head.bias" in tensors:
        tensors["lm_head.decoder.bias"] = tensors["lm_head.bias"]

    with torch.device("meta"):
        model = XmodForMaskedLM(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        raise ValueError(f"{path}: does not match an X-Mod model of the inferred shape "
                         f"(missing {missing[:8]}, unexpected {extra[:8]})")
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"{path}: tensor {key!r} has shape {tuple(tensor.shape)}, expected "
                             f"{tuple(expected[key].shape)} for {config.num_hidden_layers} layers of width {hidden}")
    model.load_state_dict(tensors, assign=True)
    model.tie_weights()
    out = Path(out_dir)
    model.save_pretrained(out)
    logger.info("converted %s -> %s (%d layers, width %d, %d languages)", path, out, config.num_hidden_layers,
                hidden, len(codes))
    return out
