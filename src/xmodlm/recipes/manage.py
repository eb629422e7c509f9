"""Language-module management from the command line: list, export, import, remove, rename."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import languages as lang_mod
from .. import tokenizer as tok_mod
from .. import vocab as vocab_mod
from ..config import validate_code
from ..files import LOCK_NAME, replace_dir, run_lock
from ..model import load_pretrained
from ..settings import setting

ACTIONS = ("list", "export", "import", "remove", "rename")


@dataclass
class ManageSettings:
    action: str = setting("list", f"one of {', '.join(ACTIONS)}")
    model: str = setting("", "checkpoint directory", required=True)
    lang: str = setting("", "language code (export, remove, rename: the old code; import: the new code)",
                       check=validate_code)
    file: str = setting("", "module file to write (export) or read (import)")
    new: str = setting("", "rename: the new code", check=validate_code)
    out: str = setting("", "where to write the changed checkpoint (import, remove, rename); default: in place")
    force: bool = setting(False, "import: skip the shared-weight fingerprint check (related models only)")
    replace: bool = setting(False, "import: overwrite an existing language's modules")


def run(s: ManageSettings) -> None:
    if s.action not in ACTIONS:
        raise ValueError(f"unknown action {s.action!r}; expected one of {ACTIONS}")
    if not s.model:
        raise ValueError("--model is required")
    if s.action in ("export", "remove", "rename") and not s.lang:
        raise ValueError(f"languages {s.action} needs --lang")
    if s.action == "rename" and not s.new:
        raise ValueError("languages rename needs --new")
    model = load_pretrained(s.model)
    if s.action in ("export", "remove", "rename"):
        s.lang = lang_mod.resolve_code(s.lang, model.config.languages)  # an ISO code (fr) names the model's (fr_XX)
    if s.action == "list":
        print(f"{'id':>3}  {'code':<10} {'parameters':>12}")
        for row in lang_mod.language_table(model):
            mark = "  (default)" if row["default"] else ""
            print(f"{row['id']:>3}  {row['code']:<10} {row['parameters']:>12,}{mark}")
        return
    if s.action == "export":
        path = lang_mod.export_language(model, s.lang, s.file or f"{s.lang}.safetensors")
        print(f"{s.lang} -> {path}")
        return
    if s.action == "import":
        lang_id = lang_mod.import_language(model, s.file, s.lang or None, force=s.force, replace=s.replace)
        print(f"imported {s.file} as id {lang_id}")
    elif s.action == "remove":
        mapping = lang_mod.remove_language(model, s.lang)
        moved = {old: new for old, new in mapping.items() if old != new}
        print(f"removed {s.lang}; ids that moved (old -> new): {moved or 'none'}")
    else:
        lang_mod.rename_language(model, s.lang, s.new)
        print(f"renamed {s.lang} -> {s.new}")
    codes = {s.lang: None} if s.action == "remove" else {s.lang: s.new} if s.action == "rename" else {}
    save_checkpoint(model, s.model, Path(s.out or s.model), codes)


# The files save_pretrained writes or that hold weights: not carried over from the directory being replaced.
REPLACED = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", LOCK_NAME,
            tok_mod.LANGUAGE_TOKENIZERS)


def save_checkpoint(model, source: str, out: Path, codes: dict[str, str | None] | None = None) -> Path:
    """Write the changed model to ``out`` (its source directory, or another) in one switch (files.replace_dir): the
    new directory is built beside the old one, with every other file of the old one (tokenizer, task.json, ...)
    carried over, then renamed into place, so a kill at any moment leaves the old model or the new one, both
    loadable. A new ``out`` also gets the source's tokenizer. The languages' own tokenizers (tokenizers/<code>/)
    follow ``codes`` ({old code: new code, or None where the language was removed})."""
    same = out.exists() and Path(source).exists() and out.resolve() == Path(source).resolve()

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if not same and (Path(source) / "tokenizer.json").exists() and not (tmp / "tokenizer.json").exists():
            tok_mod.save_tokenizer(tok_mod.load_tokenizer(source), tmp)
        renamed = {(codes or {}).get(code, code): t for code, t in tok_mod.own_tokenizers(source).items()}
        tok_mod.save_own_tokenizers({code: t for code, t in renamed.items() if code}, tmp)
        counts = None if same else vocab_mod.read_counts(source)
        if counts is not None:  # rows seen in training: the next addition must not train them
            vocab_mod.write_counts(tmp, *counts)

    def keep(name: str) -> bool:
        return name not in REPLACED and not (name.startswith("model-") and name.endswith(".safetensors"))

    with run_lock(out, "languages edit"):
        return replace_dir(out, build, keep=keep)
