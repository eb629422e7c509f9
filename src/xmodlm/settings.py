"""Run settings: dataclasses filled from defaults, then a YAML file, then command-line flags.

Every recipe's settings are one dataclass; its fields' ``metadata["help"]`` become the CLI's
``--help``. Unknown keys and values of the wrong type are errors that name the key (and the
file), never silently ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


RANGE_KEYS = ("low", "above", "high", "below", "length", "check")  # "conflicts": a setting not to give with this


def setting(default: Any = dataclasses.MISSING, help: str = "", flags: tuple[str, ...] = (), split: bool = True,
            required: bool = False, *, low: float | None = None, above: float | None = None,
            high: float | None = None, below: float | None = None, length: int | None = None, check: Any = None,
            conflicts: str | None = None, **kw: Any) -> Any:
    """A dataclass field with a help text for ``--help`` and optional extra flag names.

    List fields take repeated flags; ``split=False`` stops commas from separating items (free text).
    ``required``: the run needs a value (from a flag or the YAML file); ``--help`` lists it first, marked.
    Range, checked by ``check_ranges`` (``build``, so YAML and flags alike, and TrainConfig itself): ``low`` <= value,
    ``above`` < value, value <= ``high``, value < ``below`` (each item of a list), ``length`` items exactly;
    ``check(value)`` raises ValueError for anything else (e.g. languages.validate_code). None always passes.
    ``conflicts``: another setting that may not be given together with this one (both non-zero).
    """
    metadata = {"help": help, "flags": tuple(flags), "split": split, "required": required}
    bounds = {"low": low, "above": above, "high": high, "below": below, "length": length, "check": check,
              "conflicts": conflicts}
    metadata.update({k: v for k, v in bounds.items() if v is not None})
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def short_repr(value: Any) -> str:
    """repr() bounded in depth and length: a YAML alias bomb (a few lines that nest references a billion times)
    must not be expanded into a message."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxstring, r.maxother = 2, 6, 6, 6, 80, 80
    return r.repr(value)


def coerce(key: str, value: Any, tp: Any, where: str = "") -> Any:
    """``value`` converted to ``tp``; strings from the command line are parsed."""
    base, optional = _unwrap_optional(tp)
    loc = f" in {where}" if where else ""
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"setting {key!r}{loc} may not be empty; expected {getattr(base, '__name__', base)}")
    origin = typing.get_origin(base)
    try:
        if origin in (list, tuple):
            (item,) = typing.get_args(base)[:1] or (str,)
            items = [v for v in value.split(",") if v] if isinstance(value, str) else list(value)
            return [coerce(key, v, item, where) for v in items]
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            raise TypeError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
        if base is Path:
            return Path(value)
        return value
    except (TypeError, ValueError, RecursionError):
        name = getattr(base, "__name__", str(base))
        raise ValueError(f"setting {key!r}{loc}: {short_repr(value)} is not a valid {name}") from None


def _range_metadata(cls: type, name: str) -> dict[str, Any]:
    """The range of field ``name``: its own, else the nearest base class's (a recipe that overrides TrainConfig's
    ``lr`` default keeps TrainConfig's range)."""
    for klass in getattr(cls, "__mro__", (cls,)):
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and any(k in f.metadata for k in RANGE_KEYS):
            return dict(f.metadata)
    return {}


def _conflicts(cls: type, name: str) -> str | None:
    for klass in getattr(cls, "__mro__", (cls,)):
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "conflicts" in f.metadata:
            return f.metadata["conflicts"]
    return None


def _describe(meta: dict[str, Any]) -> str:
    parts = [f"{op} {meta[k]}" for k, op in (("low", ">="), ("above", ">"), ("high", "<="), ("below", "<"))
             if k in meta]
    return " and ".join(parts)


def check_value(cls: type, key: str, value: Any, where: str = "") -> None:
    """Raise ValueError naming the setting (and ``where``) when ``value`` is outside field ``key``'s range."""
    meta = _range_metadata(cls, key)
    if value is None or not meta:
        return
    loc = f" in {where}" if where else ""
    flag = "--" + key.replace("_", "-")
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if "length" in meta and isinstance(value, (list, tuple)) and len(items) != meta["length"]:
        raise ValueError(f"setting {key!r}{loc} ({flag}): {len(items)} value(s) {short_repr(list(items))}; it takes "
                         f"exactly {meta['length']}, comma-separated")
    for item in items:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        bad = (("low" in meta and not item >= meta["low"]) or ("above" in meta and not item > meta["above"])
               or ("high" in meta and not item <= meta["high"]) or ("below" in meta and not item < meta["below"]))
        if bad or item != item:  # NaN is in no range
            raise ValueError(f"setting {key!r}{loc} ({flag}): {short_repr(item)} is out of range; it must be "
                             f"{_describe(meta)}")
    if "check" in meta:  # each item of a list; "" is "not given" (required flags are the recipe's to check)
        for item in items:
            try:
                if item != "":
                    meta["check"](item)
            except ValueError as e:
                raise ValueError(f"setting {key!r}{loc} ({flag}): {e}") from None


def check_ranges(obj: Any, where: str = "") -> None:
    """Check every field of a settings dataclass instance against its range (see ``setting``)."""
    for f in dataclasses.fields(obj):
        if f.init:
            check_value(type(obj), f.name, getattr(obj, f.name), where)


def build(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        loc = f" in {where}" if where else ""
        raise ValueError(f"unknown setting(s) {unknown}{loc}; known: {sorted(types_)}")
    coerced = {k: coerce(k, v, types_[k], where) for k, v in values.items()}
    for k, v in coerced.items():  # before construction, so the message names the file a value came from
        check_value(cls, k, v, where)
        other = _conflicts(cls, k)
        if other and v and coerced.get(other):
            loc = f" in {where}" if where else ""
            raise ValueError(f"settings {k!r} and {other!r}{loc} are both given ({v} and {coerced[other]}); set one")
    obj = cls(**coerced)
    check_ranges(obj)  # the defaults too
    return obj


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: settings file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


# --help sections, in this order; a field goes to the first whose names hold it (required fields go first).
HELP_GROUPS = {
    "required": (),
    "data": ("data", "hf_dataset", "hf_lines", "languages", "lang", "source_lang", "task", "train", "valid",
             "tokenizer", "vocab_size", "seq_len", "batch_size", "alpha", "mixed_batches", "valid_lines",
             "valid_batches", "valid_range", "train_range", "train_limit", "eval_range", "eval_limit", "max_length",
             "stride", "text", "predictions", "normalization", "qa_normalization"),
    "model": ("model", "preset", "hidden_size", "num_hidden_layers", "adapter_reduction_factor", "dropout", "shared",
              "init_from", "full_finetune", "fallback"),
    "optimisation": ("max_steps", "epochs", "lr", "weight_decay", "betas", "eps", "warmup_steps", "warmup_ratio",
                     "grad_accum", "max_grad_norm", "seed"),
    "output": ("out_dir", "out", "json", "log_every", "eval_every", "save_every", "tensorboard"),
    "machine": ("device", "precision", "threads", "strategy", "find_unused_parameters"),
    "other": (),
}


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def add_arguments(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field (``max_steps`` -> ``--max-steps``); defaults stay in the dataclass.

    Flags are listed in sections (``HELP_GROUPS``: required first, then data, model, optimisation, output, machine);
    each shows its default once (none when it is empty or the help text explains it). ``parser.setting_groups``
    holds the sections, for flags added afterwards."""
    groups = {name: parser.add_argument_group(f"{name} settings" if name != "required" else "required")
              for name in HELP_GROUPS}
    parser.setting_groups = groups
    group_of = {field: name for name, fields in reversed(HELP_GROUPS.items()) for field in fields}
    order = list(HELP_GROUPS)

    def section(f: dataclasses.Field) -> str:
        return "required" if f.metadata.get("required", False) else group_of.get(f.name, "other")

    # the usage line in the sections' order too: required flags first, not after the generic training ones
    for f in sorted(dataclasses.fields(cls), key=lambda f: order.index(section(f))):
        if not f.init:
            continue
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if f.name in positional:
            parser.add_argument(f.name, help=help_)
            continue
        required = f.metadata.get("required", False)
        group = groups[section(f)]
        if required:
            note = " (required)"
        elif default in (None, "", [], ()) or "default" in help_.lower():
            note = ""  # nothing to show, or the help text says it
        else:
            note = f" (default: {_shown(default)})"
        base, _ = _unwrap_optional(_field_types(cls)[f.name])
        flags = [*f.metadata.get("flags", ()), "--" + f.name.replace("_", "-")]
        if base is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=f"{help_}{note}")
        elif typing.get_origin(base) in (list, tuple):
            # Repeatable, and (unless the field says split=False) comma-separated too.
            sep = "repeatable" if f.metadata.get("split") is False else "comma-separated or repeated"
            group.add_argument(*flags, dest=f.name, action="append", default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=f"{help_}; {sep}{note}")
        else:
            group.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                               help=f"{help_}{note}")
    if "config" not in {f.name for f in dataclasses.fields(cls)}:
        groups["other"].add_argument("--config", default=None, metavar="YAML",
                                     help="YAML file of settings; flags on the command line override it")


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Defaults < YAML (``--config``) < flags given on the command line."""
    types_ = _field_types(cls)
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        raw = read_yaml(args.config)
        checked = build(cls, raw, str(args.config))
        values = {k: getattr(checked, k) for k in raw}
    flags = {k: v for k, v in vars(args).items() if k in types_}
    split = {f.name: f.metadata.get("split", True) for f in dataclasses.fields(cls)}
    for k, v in flags.items():
        if isinstance(v, list):  # from action="append"
            flags[k] = [part for item in v for part in (item.split(",") if split[k] else [item]) if part]
    values.update({k: coerce(k, v, types_[k], "the command line") for k, v in flags.items()})
    return build(cls, values)
