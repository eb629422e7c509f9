"""The command line: every subcommand builds from its recipe, prints help, and reports user errors in one line."""

import subprocess
import sys

import pytest

from xmodlm.cli import COMMANDS, GROUPS, build_parser, main
from xmodlm.kernels import onednn_bf16


def test_every_subcommand_has_help(capsys):
    build_parser()  # imports every recipe: a broken import fails here, not at a user's prompt
    commands = [[name] for name in COMMANDS] + [[g, n] for g, specs in GROUPS.items() for n in specs]
    for argv in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0
        assert "--config" in capsys.readouterr().out


def test_user_error_is_one_line_with_exit_code_1(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    *info, err = capsys.readouterr().err.strip().splitlines()  # before it, only what the run said it would do
    assert err.startswith("xmodlm pretrain: error:") and "missing" in err
    assert not any("error" in line or "Traceback" in line for line in info)


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "xmodlm", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "pretrain" in result.stdout


def test_bench_quick_prints_the_side_by_side_table(capsys):
    assert main(["bench", "--quick", "--suite", "train,mixed", "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    # bf16 only where oneDNN has bf16 kernels (tests/test_no_bf16_kernels.py: the rows left out elsewhere)
    bf16 = ("ours bf16 autocast",) if onednn_bf16() else ("bf16 rows left out",)
    for row in ("reference fp32", "ours fp32", *bf16, "81 languages", "dense matmul ceiling", "(the ceiling)"):
        assert row in out, row
