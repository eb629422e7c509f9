"""Operations on a model's languages: export and import one language's modules, remove and rename
languages, identify the language of texts (``lang_ids="auto"``), and a per-language summary.

Language ids are positions in ``config.languages`` (the ModuleDict order in every layer), and
checkpoints, data files and fine-tuned heads store them. Adding a language appends (model.py's
``add_language``); ``remove_language`` is the one operation here that changes existing ids, and it
returns the old -> new map so that stored ids can be remapped. Codes never change meaning except
through ``rename_language``, which keeps the id.

This module imports torch, safetensors, py3langid (lazily) and the config, files and model modules.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

from .config import XMOD_BASE_LANGUAGES, XmodConfig, validate_code
from .files import atomic_write_bytes
from .model import XmodPreTrainedModel, module_language

logger = logging.getLogger(__name__)

Text = Union[str, Sequence[str]]  # one text, or a pair / several segments of one example

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def resolve_code(code: str, languages: Sequence[str]) -> str:
    """The model's code for ``code``: itself when the model has it; an ISO code (``fr``, ``en``) maps to the model's
    one code with that language part (``fr_XX``) when exactly one matches, as language identification does.
    Anything else is a ValueError listing the model's languages; an invalid code (a path, spaces) says so first."""
    validate_code(code)
    if code in languages:
        return code
    matches = [c for c in languages if iso_code(c) == code.lower()] if "_" not in code else []
    if len(matches) == 1:
        return matches[0]
    several = f" ({code!r} matches {matches}: name one)" if matches else ""
    raise ValueError(f"unknown language {code!r}{several}; the model's languages: {list(languages)}")


def _require_language(model: XmodPreTrainedModel, code: str) -> int:
    return model.config.languages.index(resolve_code(code, model.config.languages))


def _check_new_code(model: XmodPreTrainedModel, code: str) -> None:
    validate_code(code)
    if code in model.config.languages:
        raise ValueError(
            f"language {code!r} is already in the model (id {model.config.languages.index(code)}); "
            f"the model's languages: {model.config.languages}"
        )


# ---------------------------------------------------------------------------------------
# Fingerprint of the shared weights
# ---------------------------------------------------------------------------------------
FINGERPRINT_COVERS = (
    "sha256 over every encoder parameter that is not a language module: embeddings.*, and in every layer "
    "attention.*, intermediate.dense, output.dense, output.LayerNorm, output.adapter_layer_norm (if set), "
    "plus encoder.LayerNorm (pre-norm); sorted by name, each hashed as name, shape and its values rounded "
    "to bfloat16. Not covered: language modules, the pooler, task heads. "
    "shared = sha256(embeddings digest + ':' + rest digest)."
)


@dataclass(frozen=True)
class Fingerprint:
    shared: str  # every covered parameter
    embeddings: str  # embeddings.* only: frozen by fine-tuning, so a fine-tuned copy keeps it


def shared_fingerprint(model: XmodPreTrainedModel) -> Fingerprint:
    """Identify the shared weights a language's modules were trained with (see FINGERPRINT_COVERS).

    Values are rounded to bfloat16 before hashing, so a bf16 copy of a float32 model has the
    same fingerprint (the weights, not their storage type). Cost: one pass over the shared
    weights, a bf16 copy of one tensor at a time; 1-3 s for xmod-base's 278M on a 2-core CPU.
    """
    emb, rest = hashlib.sha256(), hashlib.sha256()
    params = dict(model.encoder_model.named_parameters())
    for name in sorted(params):
        if name.startswith("pooler.") or module_language(name) is not None:
            continue
        p = params[name].detach()
        h = emb if name.startswith("embeddings.") else rest
        h.update(f"{name}:{tuple(p.shape)}\n".encode())
        values = p.to(torch.bfloat16).contiguous().cpu().reshape(-1).view(torch.int16)
        h.update(values.numpy())  # the buffer itself: no copy
    emb_digest, rest_digest = emb.hexdigest(), rest.hexdigest()
    shared = hashlib.sha256(f"{emb_digest}:{rest_digest}".encode()).hexdigest()
    return Fingerprint(shared=shared, embeddings=emb_digest)


# ---------------------------------------------------------------------------------------
# Module files: one language's modules of every layer, with what they need to fit a model
# ---------------------------------------------------------------------------------------
FORMAT = "xmodlm-language-module"
FORMAT_VERSION = 1
# The properties a module's computation depends on: importing needs all of them to agree.
ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "adapter_reduction_factor", "adapter_size", "hidden_act",
               "pre_norm", "adapter_layer_norm", "adapter_reuse_layer_norm", "ln_before_adapter")


def export_language(model: XmodPreTrainedModel, code: str, path: str | os.PathLike) -> Path:
    """Write ``code``'s modules (all layers) to a safetensors file; returns the path written.

    ``path`` is a file, or an existing directory (then ``<path>/<code>.safetensors``). Tensors are
    named ``layer.{i}.dense1.weight`` ...; the header metadata (all strings) holds the code, the
    ARCH_FIELDS (JSON-encoded), the shared-weight fingerprints, the source model's languages and the
    dtype. The file replaces an existing one atomically.
    """
    from safetensors.torch import save

    code = resolve_code(code, model.config.languages)
    path = Path(path)
    if path.is_dir():
        path = path / f"{code}.safetensors"
    tensors = {}
    for i, table in enumerate(model.module_tables()):
        for name, p in table[code].named_parameters():
            tensors[f"layer.{i}.{name}"] = p.detach().cpu().contiguous()
    config = model.config
    fingerprint = shared_fingerprint(model)
    metadata = {
        "format": "pt",
        "xmodlm_format": FORMAT,
        "xmodlm_format_version": str(FORMAT_VERSION),
        "code": code,
        **{f: json.dumps(getattr(config, f)) for f in ARCH_FIELDS},
        "shared_fingerprint": fingerprint.shared,
        "embeddings_fingerprint": fingerprint.embeddings,
        "fingerprint_covers": FINGERPRINT_COVERS,
        "source_languages": json.dumps(list(config.languages)),
        "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch."),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def read_language_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a file written by ``export_language``; errors name the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such language-module file")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    if metadata.get("xmodlm_format") != FORMAT:
        raise ValueError(f"{path}: not an xmodlm language-module file (header metadata has no "
                         f"xmodlm_format={FORMAT!r}); write one with export_language")
    version = metadata.get("xmodlm_format_version")
    if version != str(FORMAT_VERSION):
        raise ValueError(f"{path}: language-module format version {version!r}; this xmodlm reads {FORMAT_VERSION}")
    missing = [k for k in ("code", "shared_fingerprint", "embeddings_fingerprint", *ARCH_FIELDS) if k not in metadata]
    if missing:
        raise ValueError(f"{path}: header metadata lacks {missing}")
    return metadata, tensors


def import_language(model: XmodPreTrainedModel, path: str | os.PathLike, code: str | None = None, *,
                    force: bool = False, replace: bool = False, allow_nonfinite: bool = False) -> int:
    """Add the modules in ``path`` to ``model`` as ``code`` (default: the file's code); returns its id.

    A new code gets the next free id (append-only, as ``add_language``). An existing code is an
    error unless ``replace=True``, which overwrites that language's modules in place and keeps its id.

    Checks, all before the model changes: every ARCH_FIELDS property must match (the error lists
    each difference with both values), the tensors must be complete with the right shapes, and the
    shared-weight fingerprint must match: modules only work with the shared weights they were
    trained with. ``force=True`` skips the fingerprint check, and only that, for related models:
    continued pre-training of the same model, or a fine-tuned copy (fine-tuning changes the
    transformer weights; the error says when only the embeddings still match, the fine-tuned case).
    """
    path = Path(path)
    metadata, tensors = read_language_file(path)
    code = metadata["code"] if code is None else code
    try:
        validate_code(code)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    config = model.config
    if config.shared_module:
        raise ValueError(f"{path}: cannot import a language into a shared-module model (config.shared_module: "
                         "one module serves every language)")
    exists = code in config.languages
    if exists and not replace:
        raise ValueError(
            f"{path}: language {code!r} is already in the model (id {config.languages.index(code)}); pass "
            "replace=True to overwrite its modules, or code=<new code> to import it under another name"
        )
    if not exists:
        _check_new_code(model, code)

    differences = []
    for field in ARCH_FIELDS:
        try:
            theirs = json.loads(metadata[field])
        except json.JSONDecodeError:
            raise ValueError(f"{path}: metadata {field}={metadata[field]!r} is not JSON") from None
        ours = getattr(config, field)
        if theirs != ours:
            differences.append(f"{field}: file {theirs!r}, model {ours!r}")
    if differences:
        raise ValueError(f"{path}: the modules of {metadata['code']!r} do not fit this model: "
                         + "; ".join(differences))

    if force:
        logger.info("%s: importing without checking the shared-weight fingerprint (force=True)", path)
    else:
        fingerprint = shared_fingerprint(model)
        if metadata["shared_fingerprint"] != fingerprint.shared:
            if metadata["embeddings_fingerprint"] == fingerprint.embeddings:
                why = ("the embeddings match but the transformer weights differ: this model looks like a fine-tuned "
                       "or further-trained copy of the modules' model")
            else:
                why = "the embeddings differ too: the modules were trained with another model"
            raise ValueError(
                f"{path}: shared-weight fingerprint differs: file {metadata['shared_fingerprint'][:16]}, model "
                f"{fingerprint.shared[:16]} ({why}); pass force=True to import anyway, only for related models "
                "(continued pre-training, a fine-tuned copy)"
            )

    reference = next(iter(model.module_tables()[0].values()))  # any module: all share one shape
    expected = {f"layer.{i}.{name}": tuple(p.shape)
                for i in range(config.num_hidden_layers) for name, p in reference.named_parameters()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: tensors do not match a module set of this model: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the model expects {shape}")
    nonfinite = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if nonfinite and not allow_nonfinite:
        raise ValueError(f"{path}: {len(nonfinite)} tensor(s) hold NaN or infinite values, e.g. {nonfinite[:4]}; "
                         "refusing to import them (allow_nonfinite=True imports anyway)")

    lang_id = config.languages.index(code) if exists else model.add_language(code)
    with torch.no_grad():
        for i, table in enumerate(model.module_tables()):
            for name, p in table[code].named_parameters():
                p.copy_(tensors[f"layer.{i}.{name}"])
    return lang_id


# ---------------------------------------------------------------------------------------
# Remove and rename
# ---------------------------------------------------------------------------------------
def remove_language(model: XmodPreTrainedModel, code: str) -> dict[int, int]:
    """Remove ``code``'s modules from every layer and from ``config.languages``.

    IDS CHANGE: ids are positions in ``config.languages``, so every language after the removed one
    moves down by one. Returns ``{old id: new id}`` for the remaining languages; remap stored lang
    ids (datasets, caches) with it. Codes keep working unchanged. Outputs of the remaining
    languages are bit-identical to before.

    Removing ``config.default_language`` clears it (None, with a warning): picking another default
    silently would route text through the wrong module, while a cleared default makes the next call
    without ``lang_ids`` fail with a message that says to pass lang_ids or set a default.
    Removing the last language is an error. An optimizer built before the removal still holds the
    removed parameters: build it afterwards.
    """
    config = model.config
    code = resolve_code(code, config.languages)
    removed = _require_language(model, code)
    if len(config.languages) == 1:
        raise ValueError(f"cannot remove {code!r}: it is the model's only language")
    old = list(config.languages)
    for table in model.module_tables():
        del table[code]
    config.languages.remove(code)
    for key in ("language_vocab_sizes", "language_vocab_starts"):  # its rows stay, unused (ids must not move)
        config.extra.get(key, {}).pop(code, None)
    if config.default_language == code:
        config.default_language = None
        logger.warning("removed the default language %r; config.default_language is now unset", code)
    logger.info("removed language %r (id %d); ids after it moved down by one", code, removed)
    return {old.index(c): new for new, c in enumerate(config.languages)}


def rename_language(model: XmodPreTrainedModel, old: str, new: str) -> int:
    """Rename language ``old`` to ``new`` in every layer and in the config; returns its id (unchanged).

    The ModuleDicts are rebuilt in their order, so every id keeps its module; the default language
    follows the rename. Outputs are bit-identical to before under the new code.
    """
    old = resolve_code(old, model.config.languages)
    lang_id = _require_language(model, old)
    _check_new_code(model, new)
    for table in model.module_tables():
        items = [(new if key == old else key, module) for key, module in table.items()]
        table.clear()
        table.update(items)
    model.config.languages[lang_id] = new
    if model.config.default_language == old:
        model.config.default_language = new
    for key in ("language_vocab_sizes", "language_vocab_starts"):  # its vocabulary rows (xmodlm.vocab) follow
        rows = model.config.extra.get(key)
        if rows and old in rows:
            rows[new] = rows.pop(old)
    return lang_id


# ---------------------------------------------------------------------------------------
# Language identification for lang_ids="auto"
# ---------------------------------------------------------------------------------------
UNDETERMINED = "und"
# py3langid labels for varieties of a macro-language: they use that language's module when the
# model has none of their own.
VARIETIES = {"arz": "ar", "ary": "ar", "nn": "no", "uzs": "uz", "wuu": "zh", "yue": "zh", "sdh": "ku"}
# Where several of a model's codes share an ISO prefix: the preferred one if present, else the
# lowest id. zh -> zh_CN unless the model has only zh_TW (py3langid does not tell the scripts apart).
PREFERRED = {"zh": "zh_CN"}
# fallback="closest": related languages, closest first. Hand-written from language families
# (genetic relatedness first, then shared script and contact, e.g. mn -> kk, ky, ru); a heuristic,
# not a measurement. Languages without an entry (sq, hy, ka, el ...) use the default chain.
RELATED: dict[str, tuple[str, ...]] = {
    # Romance
    "es": ("pt", "ca", "gl", "it", "fr", "ro"), "pt": ("gl", "es", "ca", "it", "fr", "ro"),
    "gl": ("pt", "es", "ca", "it", "fr"), "ca": ("es", "oc", "fr", "it", "pt", "gl"),
    "oc": ("ca", "fr", "es", "it"), "an": ("es", "ca"), "ext": ("es", "pt"),
    "it": ("es", "ca", "fr", "pt", "ro"), "vec": ("it",), "lij": ("it",),
    "fr": ("ca", "it", "es", "pt", "ro"), "wa": ("fr",), "ro": ("it", "es", "fr", "pt", "ca"),
    "la": ("it", "es", "pt", "fr", "ro"), "ht": ("fr",), "gcf": ("fr",), "gcr": ("fr",),
    "eo": ("es", "it", "fr", "pt"),
    # Germanic
    "de": ("nl", "lb", "da", "sv", "no", "en"), "lb": ("de", "nl", "fr"), "nl": ("af", "de", "fy", "en"),
    "af": ("nl", "de", "en"), "fy": ("nl", "de", "en"), "en": ("nl", "de", "da", "sv", "no"),
    "da": ("no", "sv", "de", "nl"), "no": ("da", "sv", "nn", "de"), "nn": ("no", "da", "sv"),
    "sv": ("no", "da", "de"), "is": ("fo", "no", "da", "sv"), "fo": ("is", "no", "da"), "pcm": ("en",),
    # Slavic
    "ru": ("uk", "be", "bg", "mk", "sr", "pl"), "uk": ("ru", "be", "pl", "bg"), "be": ("ru", "uk", "pl"),
    "bg": ("mk", "ru", "sr", "uk"), "mk": ("bg", "sr", "ru"), "sr": ("hr", "bs", "sl", "mk", "bg", "ru"),
    "hr": ("sr", "bs", "sl", "cs", "sk"), "bs": ("hr", "sr", "sl"), "sl": ("hr", "sr", "bs", "sk", "cs"),
    "cs": ("sk", "pl", "sl", "hr"), "sk": ("cs", "pl", "sl"), "pl": ("cs", "sk", "uk", "ru"),
    # Baltic, Uralic, Celtic, Basque (contact)
    "lt": ("lv", "ltg", "pl"), "lv": ("ltg", "lt", "et"), "ltg": ("lv", "lt"),
    "fi": ("et", "se", "sv"), "et": ("fi", "lv"), "se": ("fi", "no", "sv"), "hu": ("fi", "et"),
    "ga": ("gd", "cy", "br", "en"), "gd": ("ga", "cy", "br", "en"), "cy": ("br", "ga", "gd", "en"),
    "br": ("cy", "ga", "fr"), "eu": ("es", "fr", "ca"), "grc": ("el",),
    # Indo-Aryan, Iranian, Dravidian
    "hi": ("mr", "ne", "ur", "sa", "pa", "gu", "bn"), "ur": ("hi", "pa", "fa", "ps"),
    "mr": ("hi", "ne", "sa", "gom", "gu"), "gom": ("mr", "hi"), "ne": ("hi", "mr", "sa", "bn"),
    "sa": ("hi", "mr", "ne"), "bn": ("as", "or", "hi"), "as": ("bn", "or", "hi"), "or": ("bn", "as", "hi"),
    "gu": ("hi", "mr", "pa"), "pa": ("hi", "ur", "gu"), "si": ("hi", "bn", "mr"),
    "fa": ("tg", "ps", "ku", "ur"), "tg": ("fa", "uz", "ru"), "ps": ("fa", "ur"),
    "ku": ("sdh", "fa", "ps", "tr"), "sdh": ("ku", "fa"),
    "ta": ("ml", "te", "kn"), "ml": ("ta", "kn", "te"), "te": ("kn", "ta", "ml"), "kn": ("te", "ta", "ml"),
    # Afro-Asiatic, Niger-Congo
    "ar": ("mt", "he", "fa", "ur"), "he": ("ar", "mt"), "hbo": ("he",), "mt": ("ar", "it"),
    "am": ("ar", "he"), "om": ("so", "am"), "so": ("om", "ar"), "kab": ("ar", "fr"),
    "ha": ("yo", "ig", "ar"), "fuv": ("ha",), "yo": ("ig", "ha", "pcm"), "ig": ("yo", "ha", "pcm"),
    "sw": ("lg", "rw", "zu", "xh", "sn", "st"), "zu": ("xh", "nso", "st", "sn", "sw"),
    "xh": ("zu", "st", "nso", "sw"), "st": ("nso", "zu", "xh", "sw"), "nso": ("st", "zu", "xh", "sw"),
    "sn": ("zu", "sw"), "lg": ("rw", "sw"), "rw": ("lg", "sw"), "kik": ("sw",), "ln": ("sw", "fr"),
    # Turkic, Mongolian (contact and script)
    "tr": ("az", "tk", "crh", "uz", "kk", "ky", "tt"), "az": ("tr", "tk", "crh", "uz"), "tk": ("az", "tr", "uz"),
    "crh": ("tr", "tt", "az"), "uz": ("uzs", "ug", "kk", "ky", "tr"), "uzs": ("uz",), "ug": ("uz", "kk", "ky"),
    "kk": ("ky", "tt", "ba", "uz", "ru"), "ky": ("kk", "tt", "uz"), "tt": ("ba", "kk", "ky", "crh"),
    "ba": ("tt", "kk", "ky"), "mn": ("kk", "ky", "ru"),
    # East and South-East Asia, Americas
    "zh": ("wuu", "yue", "ja", "ko"), "wuu": ("zh",), "yue": ("zh",), "ja": ("zh", "ko"), "ko": ("ja", "zh"),
    "th": ("lo", "km", "my"), "lo": ("th", "km"), "km": ("th", "lo", "vi"), "my": ("th",),
    "vi": ("km", "th", "zh"), "id": ("ms", "jv", "tl"), "ms": ("id", "jv", "tl"), "jv": ("id", "ms"),
    "ace": ("id", "ms"), "tl": ("bcl", "id", "ms"), "bcl": ("tl",), "mg": ("id", "ms", "fr"),
    "qu": ("es",), "gug": ("es",),
}


def iso_code(code: str) -> str:
    """The ISO 639 part of a language code: ``de_DE`` -> ``de``; a bare ``de`` stays ``de``."""
    return code.split("_", 1)[0].lower()


def code_for_iso(iso: str, languages: Sequence[str]) -> str | None:
    """The code in ``languages`` for ISO language ``iso`` (a py3langid label), or None.

    Matches the part before "_"; among several matches PREFERRED wins, else the lowest id. A
    variety without its own module (VARIETIES: arz -> ar, nn -> no ...) uses its macro-language's.
    """
    iso = iso.lower()
    matches = [c for c in languages if iso_code(c) == iso]
    if matches:
        preferred = PREFERRED.get(iso)
        return preferred if preferred in matches else matches[0]
    if iso in VARIETIES:
        return code_for_iso(VARIETIES[iso], languages)
    return None


def closest_languages(language: str, languages: Sequence[str]) -> list[str]:
    """Codes in ``languages`` related to ``language`` (an ISO code or a model code), closest first (RELATED).

    Also useful to pick ``init_from`` when adding a language."""
    iso = iso_code(language)
    out: list[str] = []
    for related in (VARIETIES.get(iso), *RELATED.get(iso, ())):
        code = code_for_iso(related, languages) if related else None
        if code is not None and code not in out and iso_code(code) != iso:
            out.append(code)
    return out


def closest_module(language: str, languages: Sequence[str], default_language: str | None = None) -> str:
    """The module for a language the model lacks: the first of ``closest_languages``; if none, the
    default language; if unset, en_XX if present; otherwise the language with id 0."""
    related = closest_languages(language, languages) if language != UNDETERMINED else []
    if related:
        return related[0]
    if default_language in languages:
        return default_language
    return "en_XX" if "en_XX" in languages else languages[0]


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    load = getattr(LanguageIdentifier, "from_model_file", None) or LanguageIdentifier.from_pickled_model
    return load(MODEL_FILE)


@functools.lru_cache(maxsize=8)
def _restricted_identifier(isos: tuple[str, ...]):
    # A copy, not py3langid.set_languages: that restricts the process-wide identifier for everyone.
    identifier = copy.copy(_identifier())
    identifier.set_languages(list(isos))
    return identifier


def supported_languages() -> frozenset[str]:
    """The ISO codes py3langid can detect (about 140 labels; "zxx", no language, excluded)."""
    return frozenset(_identifier().nb_classes) - {"zxx"}


def _as_text(text: Text) -> str:
    return text if isinstance(text, str) else " ".join(text)


def detect_languages(texts: Sequence[Text], restrict_to: Sequence[str] | None = None) -> list[str]:
    """py3langid's ISO code for each text; UNDETERMINED ("und") for text without letters.

    ``restrict_to``: ISO codes to choose among (all py3langid knows by default).
    """
    identifier = _restricted_identifier(tuple(sorted(set(restrict_to)))) if restrict_to else _identifier()
    out = []
    for text in texts:
        text = _as_text(text)
        if not any(ch.isalpha() for ch in text):  # py3langid would answer its first label
            out.append(UNDETERMINED)
            continue
        label = identifier.classify(text)[0]
        out.append(UNDETERMINED if label == "zxx" else str(label))
    return out


def identify_languages(texts: Text | Sequence[Text], model_languages: Sequence[str], fallback: str | None = None,
                       *, default_language: str | None = None, restrict: bool = False) -> list[str]:
    """One of ``model_languages`` for each text, chosen by detecting its language with py3langid.

    The detected ISO code maps to the model's code by its part before "_" (``code_for_iso``:
    zh -> zh_CN unless the model has only zh_TW; a variety such as arz or nn uses ar / no).

    When the detected language has no module, or no language is detected (no letters):
      * ``fallback=None``: ValueError naming each such text, the detected ISO code, its X-Mod
        code if it has one, and the model's languages;
      * ``fallback=<a model code>``: that language's module;
      * ``fallback="closest"``: ``closest_module``: the closest related language the model has
        (RELATED table), else ``default_language``, else en_XX, else id 0.

    ``restrict``: detect among the model's languages only (needs every one of them known to
    py3langid). Restricting improves accuracy where close languages are confused (id/ms, ru/uk on
    short texts), but then a text in a language outside the model is silently assigned the most
    similar model language and never raises; the default (unrestricted) detects such texts, so
    they raise or take the fallback.

    A pair or list of segments counts as one text (joined by a space).
    """
    languages = list(model_languages)
    if not languages:
        raise ValueError("the model has no languages")
    if isinstance(texts, str):
        texts = [texts]
    if fallback is not None and fallback != "closest" and fallback not in languages:
        raise ValueError(f"fallback {fallback!r} is neither 'closest' nor one of the model's languages {languages}")
    restrict_to = None
    if restrict:
        known = supported_languages()
        unknown = [c for c in languages if iso_code(c) not in known]
        if unknown:
            raise ValueError(f"restrict=True needs every model language known to py3langid; unknown: {unknown} "
                             "(use restrict=False)")
        isos = {iso_code(c) for c in languages}
        restrict_to = sorted(isos | {v for v, macro in VARIETIES.items() if macro in isos})
    detected = detect_languages(texts, restrict_to)
    chosen, failures = [], []
    for i, iso in enumerate(detected):
        code = code_for_iso(iso, languages) if iso != UNDETERMINED else None
        if code is None:
            if fallback is None:
                failures.append(i)
            elif fallback == "closest":
                code = closest_module(iso, languages, default_language)
            else:
                code = fallback
        chosen.append(code)
    if failures:
        raise ValueError(_no_module_message(texts, detected, failures, languages))
    return chosen


def _no_module_message(texts, detected, failures, languages) -> str:
    parts = []
    for i in failures[:5]:
        snippet = _as_text(texts[i])
        snippet = snippet if len(snippet) <= 40 else snippet[:40] + "..."
        iso = detected[i]
        if iso == UNDETERMINED:
            parts.append(f"text {i} ({snippet!r}): no language detected")
        else:
            xmod = code_for_iso(iso, XMOD_BASE_LANGUAGES)
            candidate = f"X-Mod code {xmod}" if xmod else "no X-Mod code"
            parts.append(f"text {i} ({snippet!r}): detected {iso!r} ({candidate}), which has no module")
    more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
    return (f"lang_ids='auto' found no module for {len(failures)} of {len(texts)} texts: " + "; ".join(parts) + more
            + f". The model's languages: {languages}. "
            "Pass fallback='closest' or a language code, or lang_ids explicitly")


def resolve_auto_lang_ids(texts: Text | Sequence[Text], model: XmodPreTrainedModel | XmodConfig,
                          fallback: str | None = None, *, restrict: bool = False) -> list[str]:
    """``lang_ids="auto"``: one language code per text for ``model`` (or its config); see identify_languages.
    "closest" falls back to ``config.default_language`` before en_XX."""
    config = model if isinstance(model, XmodConfig) else model.config
    return identify_languages(texts, config.languages, fallback,
                              default_language=config.default_language, restrict=restrict)


# ---------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------
def language_table(model: XmodPreTrainedModel) -> list[dict]:
    """One row per language in id order: id, code, parameters (its modules, all layers), default,
    shared (True when config.shared_module: every row counts the same shared module)."""
    config = model.config
    rows = []
    for lang_id, code in enumerate(config.languages):
        params = {id(p): p.numel() for table in model.module_tables() for p in table[code].parameters()}
        rows.append({"id": lang_id, "code": code, "parameters": sum(params.values()),
                     "default": code == config.default_language, "shared": config.shared_module})
    return rows
