"""bf16 on a processor where oneDNN has no bf16 kernels (AVX2 only: AMD's Zen 1-3, Intel before Skylake-SP).

There oneDNN's bf16 calls fail ("could not create a primitive descriptor", "bf16 path needs the cpu support ..."),
so every bf16 path through oneDNN must give way to torch's ops, and whoever asks for bf16 is told that torch emulates
it there. On such a processor these tests run as they are; elsewhere the ``no_bf16`` fixture makes
``kernels.onednn_bf16()`` say no, which is what every path asks.
"""

from __future__ import annotations

import copy

import pytest
import torch

import xmodlm.kernels as kernels
import xmodlm.kernels.amp as kernel_amp
from test_model import MIXED, batch
from tiny import ours
from xmodlm.model import XmodForMaskedLM, XmodModel
from xmodlm.recipes import bench
from xmodlm.trainer import describe_precision, emulated_bf16


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setitem(kernel_amp._BF16_ONEDNN, "supported", False)
    yield
    kernels.use_onednn(True)


def onednn_calls(run) -> tuple[torch.Tensor, list[str]]:
    """run()'s result and the oneDNN ops it called."""
    with torch.profiler.profile() as prof:
        out = run()
    return out, [e.key for e in prof.key_averages() if "mkldnn" in e.key]


def encode(model, ids, mask, langs, onednn: bool, autocast: bool = False):
    kernels.use_onednn(onednn)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(ids, attention_mask=mask, lang_ids=langs).last_hidden_state
    finally:
        kernels.use_onednn(True)


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16 weights", "fp32 weights under autocast"])
def test_bf16_inference_calls_no_onednn_kernel_and_equals_torchs_ops(no_bf16, autocast):
    model = ours(XmodModel, num_attention_heads=2)
    if not autocast:
        model = model.to(torch.bfloat16)
    ids, mask = batch(b=5, t=40, lengths=[40, 31, 40, 7, 40])
    plain = encode(model, ids, mask, MIXED, False, autocast)
    for _ in range(2):  # the second call is where cached or grouped module weights would be used
        got, calls = onednn_calls(lambda: encode(model, ids, mask, MIXED, True, autocast))
        assert calls == []
        assert got.dtype == plain.dtype and torch.equal(got, plain)
    paths = kernels.describe_paths()
    assert "oneDNN bf16 kernels no" in paths["cpu"] and "SDPA" in paths["bf16 inference attention"]
    assert paths["bf16 autocast inference (CPU)"].startswith("torch's ops")
    assert paths["bf16 inference products (CPU)"].startswith("torch's ops")


def test_fp32_inference_keeps_onednn(no_bf16):
    """Only bf16 gives way: fp32 inference still runs oneDNN's fused kernels."""
    model = ours(XmodModel, num_attention_heads=2)
    ids, mask = batch(b=5, t=40)
    if not torch.backends.mkldnn.is_available():
        pytest.skip("oneDNN is not in this torch build")
    _, calls = onednn_calls(lambda: encode(model, ids, mask, MIXED, True))
    assert calls


def test_bf16_autocast_training_step_calls_no_onednn_kernel(no_bf16):
    model = ours(XmodForMaskedLM, num_attention_heads=2).train()
    twin = copy.deepcopy(model)
    ids, _ = batch(b=5, t=16)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)

    def step(m, onednn):
        kernels.use_onednn(onednn)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = m(input_ids=ids, lang_ids=MIXED, labels=labels).loss
            loss.backward()
        finally:
            kernels.use_onednn(True)
        return loss.detach()

    loss, calls = onednn_calls(lambda: step(model, True))
    assert calls == [] and "autocast's F.linear" in kernels.describe_paths()["linears in bf16 autocast training (CPU)"]
    assert torch.equal(loss, step(twin, False))
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), name


def test_asking_for_bf16_warns_that_it_is_emulated(no_bf16):
    cpu = torch.device("cpu")
    assert emulated_bf16(cpu, torch.bfloat16) and not emulated_bf16(cpu, None)  # the trainer logs a WARNING then
    line = describe_precision("bf16", cpu, torch.bfloat16)
    assert "WARNING" in line and "no bf16 kernels" in line and "fp32" in line
    assert "WARNING" not in describe_precision("fp32", cpu, None)
    auto = describe_precision("auto", cpu, None)
    assert "WARNING" not in auto and "no bf16 kernels" in auto


def test_asking_for_bf16_where_it_is_fast_does_not_warn(monkeypatch):
    monkeypatch.setitem(kernel_amp._BF16_ONEDNN, "supported", True)
    assert not emulated_bf16(torch.device("cpu"), torch.bfloat16)
    assert "WARNING" not in describe_precision("bf16", torch.device("cpu"), torch.bfloat16)


def test_bf16_embeddings_warn_that_bf16_is_emulated(no_bf16):
    from xmodlm.embeddings import embed_ids

    model = ours(XmodModel, num_attention_heads=2)
    rows = [[0, 5, 6, 7, 2], [0, 8, 9, 2]]
    with pytest.warns(RuntimeWarning, match="no bf16 kernels"):
        got = embed_ids(model, rows, 0, precision="bf16")
    assert got.shape[:2] == (1, 2) and torch.isfinite(got).all()


def test_bench_leaves_out_the_bf16_rows_and_says_why(no_bf16, capsys):
    results = bench.run(bench.BenchSettings(suite=["train", "mixed"], steps=1, warmup=0, quick=True))
    out = capsys.readouterr().out
    impls = {r["impl"] for r in results}
    assert "ours fp32" in impls and "reference fp32" in impls
    assert not any("bf16" in r["impl"] for r in results if r["shape"].startswith("MLM"))
    assert any(r["impl"] == "bf16 torch.mm" for r in results) and "bf16 rows left out" in out
    assert not any(r["shape"].startswith("dense matmul ceiling") and r["impl"].startswith("bf16") for r in results)
    assert all("fp32" in r["shape"] for r in results if r["shape"].startswith("mixing cost"))
