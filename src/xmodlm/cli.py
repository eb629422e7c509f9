"""The ``xmodlm`` command: one subcommand per recipe; flags come from the recipes' settings dataclasses."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import settings as settings_mod
from .runtime import tune_allocator

# subcommand -> (recipe module, settings class, run function, one-line help, positional fields)
COMMANDS = {
    "demo": ("xmodlm.recipes.demo", "DemoSettings", "run",
             "pre-train, add a language, fine-tune and transfer zero-shot on synthetic languages", ()),
    "pretrain": ("xmodlm.recipes.pretrain", "PretrainSettings", "run",
                 "pre-train an X-Mod model (or the shared baseline) with masked LM", ()),
    "add-language": ("xmodlm.recipes.add_language", "AddLanguageSettings", "run",
                     "add a language to a pre-trained model, training only its new modules", ()),
    "finetune": ("xmodlm.recipes.finetune", "FinetuneSettings", "run",
                 "fine-tune on a source language (modules and embeddings frozen)", ()),
    "evaluate": ("xmodlm.recipes.evaluate", "EvaluateSettings", "run",
                 "evaluate a fine-tuned model zero-shot on target languages", ()),
    "score": ("xmodlm.recipes.evaluate", "ScoreSettings", "score",
              "re-score saved predictions (QA: SQuAD / MLQA EM and F1; NLI, NER, POS, MC)", ()),
    "convert-fairseq": ("xmodlm.recipes.convert", "ConvertSettings", "run",
                        "convert a fairseq X-Mod checkpoint to a Hugging Face directory", ("checkpoint",)),
    "bench": ("xmodlm.recipes.bench", "BenchSettings", "run",
              "benchmark against transformers' Xmod side by side", ()),
    "fill-mask": ("xmodlm.recipes.predict", "FillMaskSettings", "run",
                  "predict <mask> tokens; --lang auto picks each text's module", ()),
    "languages": ("xmodlm.recipes.manage", "ManageSettings", "run",
                  "list, export, import, remove or rename language modules of a checkpoint", ("action",)),
}
GROUPS = {
    "tokenizer": {"train": ("xmodlm.recipes.pretrain", "TokenizerSettings", "train_tokenizer_cmd",
                            "train a unigram tokenizer on per-language files", ())},
    "experiment": {"curse": ("xmodlm.recipes.experiment", "CurseSettings", "run",
                             "the curse-of-multilinguality experiment: X-Mod vs shared", ()),
                   "addition": ("xmodlm.recipes.addition", "AdditionSettings", "run",
                                "a language added post hoc against pre-trained from the start", ())},
}


def _add(sub, name, spec, load: bool):
    module_name, cls_name, func_name, help_, positional = spec
    parser = sub.add_parser(name, help=help_, description=help_)
    if not load:  # only the chosen command's recipe is imported: fast, and one recipe cannot break another
        return
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    settings_mod.add_arguments(parser, cls, positional)
    run = getattr(module, func_name)
    parser.set_defaults(func=lambda args: run(settings_mod.from_args(cls, args)))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's recipe is imported (None: every recipe)."""
    parser = argparse.ArgumentParser(prog="xmodlm", description="X-Mod: modular multilingual transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, spec in COMMANDS.items():
        _add(sub, name, spec, command in (None, name))
    for group, specs in GROUPS.items():
        gparser = sub.add_parser(group, help=f"{group} commands")
        gsub = gparser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        for name, spec in specs.items():
            _add(gsub, name, spec, command in (None, group))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    tune_allocator()
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f"xmodlm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
