"""Language-module management from the command line: list, export, import, remove, rename."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import languages as lang_mod
from .. import tokenizer as tok_mod
from .. import vocab as vocab_mod
from ..model import load_pretrained
from ..settings import setting

ACTIONS = ("list", "export", "import", "remove", "rename")


@dataclass
class ManageSettings:
    action: str = setting("list", f"one of {', '.join(ACTIONS)}")
    model: str = setting("", "checkpoint directory", required=True)
    lang: str = setting("", "language code (export, remove, rename: the old code; import: the new code)")
    file: str = setting("", "module file to write (export) or read (import)")
    new: str = setting("", "rename: the new code")
    out: str = setting("", "where to write the changed checkpoint (import, remove, rename); default: in place")
    force: bool = setting(False, "import: skip the shared-weight fingerprint check (related models only)")
    replace: bool = setting(False, "import: overwrite an existing language's modules")


def run(s: ManageSettings) -> None:
    if s.action not in ACTIONS:
        raise ValueError(f"unknown action {s.action!r}; expected one of {ACTIONS}")
    if not s.model:
        raise ValueError("--model is required")
    model = load_pretrained(s.model)
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
    out = Path(s.out or s.model)
    model.save_pretrained(out)
    if out != Path(s.model) and (Path(s.model) / "tokenizer.json").exists():
        tok_mod.save_tokenizer(tok_mod.load_tokenizer(s.model), out)
    counts = vocab_mod.read_counts(s.model) if out != Path(s.model) else None
    if counts is not None:  # rows seen in training: the next addition must not train them
        vocab_mod.write_counts(out, *counts)
