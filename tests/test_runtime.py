import platform
import sys

import pytest

from xmodlm.runtime import tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the allocator knobs are glibc's")
def test_tune_allocator_sets_glibc_thresholds():
    assert tune_allocator() is True


@pytest.mark.parametrize("kw", [dict(mmap_threshold=0), dict(trim_threshold=2**40)])
def test_tune_allocator_rejects_out_of_range_sizes(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        tune_allocator(**kw)


# ---- the kernels' timed choices, kept per machine ----------------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from xmodlm import kernels, runtime  # noqa: E402
from xmodlm.kernels import tune  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def fresh_choices(monkeypatch):
    """No choice in memory before or after; the listener the test sets is removed after it."""
    saved = dict(tune._CHOICES)
    tune._CHOICES.clear()
    yield tune
    runtime.use_choice_cache(False)
    tune._CHOICES.clear()
    tune._CHOICES.update(saved)


def choose_for(shape: int) -> str:
    """A timed choice between a slow default and a fast alternative (names the kernels offer)."""
    x = torch.randn(64, 64)
    return tune.choose(("test product", shape), {"oneDNN": lambda: [x @ x for _ in range(8)], "BLAS": lambda: x})


def test_a_choice_is_kept_in_the_file_and_taken_back_untimed_by_the_next_process(tmp_path, fresh_choices,
                                                                                  monkeypatch):
    path = tmp_path / "cache" / "choices.json"  # its directory is made
    assert runtime.use_choice_cache(path) == 0
    assert choose_for(1) == "BLAS" and choose_for(2) == "BLAS"
    saved = json.loads(path.read_text())
    [(machine, entries)] = saved["machines"].items()
    assert machine == runtime.machine_fingerprint() and len(entries) == 2
    tune._CHOICES.clear()  # a new process on the same machine
    timed = []
    monkeypatch.setattr(tune, "_fastest", lambda candidates: timed.append(1) or "oneDNN")
    assert runtime.use_choice_cache(path) == 2
    assert choose_for(1) == "BLAS" and choose_for(2) == "BLAS" and not timed  # the file's, not timed again
    assert choose_for(3) == "oneDNN" and timed == [1]  # a new shape: timed, and added
    assert len(json.loads(path.read_text())["machines"][machine]) == 3


def test_keys_with_flags_and_none_come_back_as_they_were(tmp_path, fresh_choices):
    """An inference linear's key holds its activation (None: none) and two flags besides names and sizes."""
    path = tmp_path / "choices.json"
    runtime.use_choice_cache(path)
    key = ("linear", 256, 768, 3072, None, True, False)
    x = torch.randn(64, 64)
    tune.choose(key, {"fused": lambda: [x @ x for _ in range(8)], "row blocks": lambda: x})
    made = tune.choices()
    tune._CHOICES.clear()
    assert runtime.use_choice_cache(path) == 1 and tune.choices() == made


def test_another_machines_choices_are_not_taken(tmp_path, fresh_choices):
    path = tmp_path / "choices.json"
    key = [["test product", 1, 1, ["oneDNN", "BLAS"]], "BLAS"]
    path.write_text(json.dumps({"format": runtime._CACHE_FORMAT, "machines": {"another processor": [key]}}))
    assert runtime.use_choice_cache(path) == 0 and not tune.choices()
    choose_for(1)
    machines = json.loads(path.read_text())["machines"]
    assert machines["another processor"] == [key] and runtime.machine_fingerprint() in machines  # both kept


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "something else", "machines": {}}),
                                     "MACHINE_ENTRY_NAMING_A_CANDIDATE_NOT_ON_OFFER"])
def test_a_damaged_file_is_reported_timed_again_and_replaced(tmp_path, fresh_choices, caplog, content):
    path = tmp_path / "choices.json"
    if content == "MACHINE_ENTRY_NAMING_A_CANDIDATE_NOT_ON_OFFER":  # a hand-edited choice the code cannot run
        content = json.dumps({"format": runtime._CACHE_FORMAT, "machines": {
            runtime.machine_fingerprint(): [[["test product", 1, 1, ["oneDNN", "BLAS"]], "fused"]]}})
    path.write_text(content)
    with caplog.at_level("WARNING", logger="xmodlm.runtime"):
        assert runtime.use_choice_cache(path) == 0
    assert str(path) in caplog.text and "timed again" in caplog.text
    assert choose_for(1) == "BLAS"
    assert json.loads(path.read_text())["format"] == runtime._CACHE_FORMAT  # rewritten whole


def test_an_unwritable_place_warns_once_and_keeps_the_choices_in_memory(tmp_path, fresh_choices, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    path = blocker / "choices.json"  # under a file: cannot be made
    runtime.use_choice_cache(path)
    with caplog.at_level("WARNING", logger="xmodlm.runtime"):
        assert choose_for(1) == "BLAS" and choose_for(2) == "BLAS"
    assert caplog.text.count("cannot keep") == 1 and len(tune.choices()) == 2


def test_the_cache_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XMODLM_KERNEL_CACHE", "off")
    assert runtime.choice_cache_path() is None
    monkeypatch.setenv("XMODLM_KERNEL_CACHE", str(tmp_path / "k.json"))
    assert runtime.choice_cache_path() == tmp_path / "k.json"
    monkeypatch.delenv("XMODLM_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert runtime.choice_cache_path() == tmp_path / "xmodlm" / "kernel-choices.json"


CHILD = """
import sys, torch
from xmodlm import kernels, runtime
from xmodlm.kernels import linear, tune
torch.set_num_threads(1)
timed = []
fastest = tune._fastest
tune._fastest = lambda candidates: timed.append(1) or fastest(candidates)
runtime.use_choice_cache()
g = torch.Generator().manual_seed(0)
dy, x = torch.randn(300, 96, generator=g), torch.randn(300, 40, generator=g)
dw = linear.weight_gradient(dy, x)
print(len(timed), tune.choices()[next(iter(tune.choices()))], dw.sum().item().hex())
"""


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="the timed weight gradient needs oneDNN")
def test_two_processes_on_one_machine_time_once_and_compute_the_same_bits(tmp_path):
    """The weight gradient's timed choice in two real processes with one cache file: the first times it, the second
    takes the first's choice without timing, so its result has the same bits whatever the timing would say now."""
    env = {**os.environ, "XMODLM_KERNEL_CACHE": str(tmp_path / "choices.json"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    runs = [subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    (timed1, choice1, bits1), (timed2, choice2, bits2) = (r.stdout.split() for r in runs)
    assert (timed1, timed2) == ("1", "0") and choice1 == choice2 and bits1 == bits2


def test_the_command_keeps_the_choices_for_every_subcommand_and_stops_after(tmp_path, monkeypatch, fresh_choices):
    from xmodlm import cli

    calls = []
    monkeypatch.setattr(cli, "use_choice_cache", lambda *a: calls.append(a) or runtime.use_choice_cache(*a))
    monkeypatch.setenv("XMODLM_KERNEL_CACHE", str(tmp_path / "choices.json"))
    seen = []
    monkeypatch.setattr(cli, "build_parser", _parser_running(lambda: seen.append(tune._LISTENER["fn"])))
    assert cli.main(["anything"]) == 0
    assert calls == [(), (False,)] and seen[0] is not None and tune._LISTENER["fn"] is None


def _parser_running(body):
    """A parser whose one command runs body (for main()'s set-up around a command, without a real recipe)."""
    import argparse

    def build(command=""):
        parser = argparse.ArgumentParser()
        parser.set_defaults(func=lambda settings: body(), settings=lambda args: None, command="anything")
        parser.add_argument("command")
        return parser
    return build
