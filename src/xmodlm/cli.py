"""The ``xmodlm`` command: one subcommand per recipe; flags come from the recipes' settings dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import re
import sys

from . import settings as settings_mod
from .runtime import set_threads, tune_allocator, use_choice_cache

# subcommand -> (recipe module, settings class, run function, one-line help, positional fields)
COMMANDS = {
    "demo": ("xmodlm.recipes.demo", "DemoSettings", "run",
             "pre-train, add a language, fine-tune and transfer zero-shot on synthetic languages", ()),
    "pretrain": ("xmodlm.recipes.pretrain", "PretrainSettings", "run",
                 "pre-train an X-Mod model (or the shared baseline) with masked LM", ()),
    "add-language": ("xmodlm.recipes.add_language", "AddLanguageSettings", "run",
                     "add a language to a pre-trained model: its new modules (and the vocabulary rows its text needs) train, the other languages stay bit-identical", ()),
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
    "embed": ("xmodlm.recipes.embed", "EmbedSettings", "run",
              "sentence embeddings of text files (.npy with the line ids)", ()),
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
                   "retrieval": ("xmodlm.recipes.retrieval_experiment", "RetrievalExperimentSettings", "run",
                                 "cross-lingual retrieval, X-Mod vs shared, before and after contrastive "
                                 "fine-tuning", ()),
                   "addition": ("xmodlm.recipes.addition", "AdditionSettings", "run",
                                "a language added post hoc against pre-trained from the start", ())},
}


# Commands that choose their threads themselves (demo: the same rule, in its own settings; bench: what it times).
OWN_THREADS = ("demo", "bench")

# Messages shared with the Python API name keyword arguments; on the command line they are flags.
CLI_WORDING = {"fallback='closest'": "--fallback closest", 'fallback="closest"': "--fallback closest",
               "force=True": "--force", "replace=True": "--replace", "code=<new code>": "--lang <new code>",
               "lang_ids='auto'": "--lang auto", "lang_ids explicitly": "--lang CODE"}


def cli_wording(message: str) -> str:
    """A library error message with its Python keyword arguments replaced by the command line's flags."""
    return re.sub("|".join(map(re.escape, CLI_WORDING)), lambda m: CLI_WORDING[m.group(0)], message)


def _add(sub, name, spec, load: bool, parsers: dict):
    module_name, cls_name, func_name, help_, positional = spec
    parser = sub.add_parser(name, help=help_, description=help_)
    parsers[name] = parser
    if not load:  # only the chosen command's recipe is imported: fast, and one recipe cannot break another
        return
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    settings_mod.add_arguments(parser, cls, positional)
    if name not in OWN_THREADS and "threads" not in {f.name for f in dataclasses.fields(cls)}:
        getattr(parser, "setting_groups", {}).get("machine", parser).add_argument("--threads", type=int, default=0, metavar="N",
                            help="CPU threads of torch's operators (default: one per core left idle by the "
                                 "machine's other work, from the load average; printed at start)")
    run = getattr(module, func_name)
    parser.set_defaults(func=run, settings=lambda args: settings_mod.from_args(cls, args))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's recipe is imported (None: every recipe)."""
    parser = argparse.ArgumentParser(prog="xmodlm", description="X-Mod: modular multilingual transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.subcommands = {}  # name (or "group name") -> its parser, for errors in the subcommand's own usage
    for name, spec in COMMANDS.items():
        _add(sub, name, spec, command in (None, name), parser.subcommands)
    for group, specs in GROUPS.items():
        gparser = sub.add_parser(group, help=f"{group} commands")
        parser.subcommands[group] = gparser
        gsub = gparser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        for name, spec in specs.items():
            _add(gsub, name, spec, command in (None, group), {})
            parser.subcommands[f"{group} {name}"] = gsub.choices[name]
    return parser


class _Messages(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """The library's log lines (resuming, parameter counts, warnings) on stderr, once per process."""
    root = logging.getLogger("xmodlm")
    if not any(getattr(h, "_xmodlm", False) for h in root.handlers):
        handler = _Stderr()
        handler.setFormatter(_Messages())
        handler._xmodlm = True
        root.addHandler(handler)
    root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top level's
        name = " ".join(filter(None, (getattr(args, "command", None), getattr(args, "subcommand", None))))
        parser.subcommands.get(name, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    configure_logging()
    tune_allocator()
    import torch

    threads = torch.get_num_threads()
    try:
        settings = args.settings(args)  # every setting checked before anything is printed or run
        if "threads" in vars(args) and args.command not in OWN_THREADS:
            set_threads(args.threads)
        use_choice_cache()  # the kernels' timed choices of earlier runs on this machine: the same ones, once timed
        args.func(settings)
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f"xmodlm {args.command}: error: {cli_wording(str(e))}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, permissions, an unreadable file: the file and the reason, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"xmodlm {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)  # main() called in a process (a test session) leaves its setting as it was
        use_choice_cache(False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
