"""Settings: defaults < YAML < command-line flags; unknown keys and bad types name the key and file."""

import argparse
from dataclasses import dataclass

import pytest

from xmodlm.settings import add_arguments, from_args, setting


@dataclass
class Example:
    data: str = setting("corpus", "data directory")
    max_steps: int = setting(10, "updates")
    languages: list[str] = setting([], "codes")
    text: list[str] = setting([], "free text", split=False)
    shared: bool = setting(False, "shared baseline")
    lr: float | None = setting(None, "learning rate")
    out_dir: str = setting("runs", "output", flags=("--out",))


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, Example)
    return from_args(Example, parser.parse_args(argv))


def test_defaults_yaml_and_flags_in_that_order(tmp_path):
    assert parse([]) == Example()
    cfg = tmp_path / "run.yaml"
    cfg.write_text("max_steps: 5\nlr: 0.1\nlanguages: [en_XX, de_DE]\n")
    s = parse(["--config", str(cfg), "--max-steps", "7", "--out", "elsewhere"])
    assert (s.max_steps, s.lr, s.languages, s.out_dir) == (7, 0.1, ["en_XX", "de_DE"], "elsewhere")


def test_lists_are_repeatable_and_comma_separated_unless_free_text():
    s = parse(["--languages", "en_XX,de_DE", "--languages", "fr_XX", "--text", "a, b", "--text", "c"])
    assert s.languages == ["en_XX", "de_DE", "fr_XX"]
    assert s.text == ["a, b", "c"]


def test_booleans_and_optional_values():
    assert parse(["--shared"]).shared is True
    assert parse(["--shared", "--no-shared"]).shared is False
    assert parse(["--lr", "none"]).lr is None


def test_unknown_yaml_key_names_the_key_and_the_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("max_step: 5\n")
    with pytest.raises(ValueError, match=r"max_step.*run\.yaml"):
        parse(["--config", str(cfg)])


def test_wrong_type_names_the_key_value_and_type(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("max_steps: five\n")
    with pytest.raises(ValueError, match=r"'max_steps' in .*run\.yaml: 'five' is not a valid int"):
        parse(["--config", str(cfg)])
    with pytest.raises(ValueError, match=r"'max_steps' in the command line: '2.5' is not a valid int"):
        parse(["--max-steps", "2.5"])


def test_invalid_yaml_names_the_line(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("max_steps: 5\n  lr: [\n")
    with pytest.raises(ValueError, match=r"run\.yaml line \d+"):
        parse(["--config", str(cfg)])
