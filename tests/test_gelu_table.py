"""GELU and its backward in bf16 autocast training through tables of every bf16 value (``kernels.gelu``, native.c's
xm_gelu_table*): the tables against float64, the kernels against the tables bit for bit, against torch's GELU, thread
counts, bad input, and the model's masked-LM step."""

from __future__ import annotations

import pytest
import torch

from switches import switch_fixture
from test_model import MIXED, batch, maxdiff
from tiny import ours

from xmodlm import kernels
from xmodlm.kernels import gelu as kernel_gelu, native
from xmodlm.model import XmodForMaskedLM

pytestmark = pytest.mark.skipif(not native.vector_available(),
                                reason=f"own vector kernels not available: {native.vector_reason()}")

BITS = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
U = 2.0 ** -8  # a bf16 rounding (relative)


switch = switch_fixture(kernels.use_table_gelu, kernel_gelu.table_gelu_on)


def gelu64(x):
    return 0.5 * x * torch.special.erfc(-x / 2 ** 0.5)


def slope64(x):
    return 0.5 * torch.special.erfc(-x / 2 ** 0.5) + x * torch.exp(-x * x / 2) / (2 * torch.pi) ** 0.5


def test_tables_are_float64_rounded_once():
    x = BITS.double()
    finite = x.isfinite()
    values, slopes = native.gelu_values(), native.gelu_slopes()
    assert values.dtype == slopes.dtype == torch.float32 and values.shape == slopes.shape == (65536,)
    def flushed(t):
        return torch.where(t.abs() < 2.0 ** -126, t * 0, t)
    assert torch.equal(values[finite], flushed(gelu64(x[finite]).bfloat16().float()))
    assert torch.equal(slopes[finite], flushed(slope64(x[finite]).float()))
    assert (values[finite] != 0).sum() > 30000  # the flush takes GELU's far tail only
    assert values[0x7F80].item() == float("inf") and values[0xFF80].item() == 0.0 and values[0x7FC0].isnan()
    assert slopes[0x7F80].item() == 1.0 and slopes[0xFF80].item() == 0.0 and slopes[0x7FC0].isnan()
    assert native.gelu_values() is values and native.gelu_slopes() is slopes  # made once


def inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(n, generator=g) * 4).bfloat16()
    h[: min(n, 8)] = torch.tensor([0.0, -0.0, 30.0, -30.0, -13.1, 1e-20, float("inf"), float("-inf")])[: min(n, 8)].bfloat16()
    dg = (torch.randn(n, generator=g) * 1e-3).bfloat16()
    return h, dg


@pytest.mark.parametrize("n", [1, 31, 32, 1000, 2048 * 1024 + 7])
def test_kernels_are_the_tables(n):
    """Forward: the table's value of each input's bits, exactly. Backward: round_bf16(dg * slope) exactly, where
    that product is a normal float32; a denormal one is flushed to zero."""
    h, dg = inputs(n)
    idx = h.view(torch.int16).to(torch.int64) & 0xFFFF
    assert torch.equal(native.gelu_table(h), native.gelu_values()[idx].bfloat16())
    product = dg.float() * native.gelu_slopes()[idx]
    got = native.gelu_table_backward(dg, h)
    normal = product.abs() >= 2.0 ** -126
    assert torch.equal(got[normal], product[normal].bfloat16())
    assert not got[~normal & product.isfinite()].float().any()


def test_closer_to_float64_than_torchs():
    """Against float64 on 2M random inputs: within one bf16 rounding wherever the value is a normal float32, and
    correctly rounded at least as often as torch's bf16 GELU and gelu_backward."""
    h, dg = inputs(2048 * 1024)
    x = h.double()
    ok = x.isfinite() & (gelu64(x).abs() > 2.0 ** -120)
    want, got, torchs = gelu64(x)[ok], native.gelu_table(h).double()[ok], torch.nn.functional.gelu(h).double()[ok]
    assert ((got - want).abs() <= U * want.abs()).all()
    assert (got == want.bfloat16().double()).double().mean() >= (torchs == want.bfloat16().double()).double().mean()
    want_b = (dg.double() * slope64(x))[ok]
    got_b = native.gelu_table_backward(dg, h).double()[ok]
    torch_b = torch.ops.aten.gelu_backward(dg, h).double()[ok]
    fine = want_b.abs() > 2.0 ** -120
    assert ((got_b - want_b).abs()[fine] <= U * want_b.abs()[fine]).all()
    exact = want_b.bfloat16().double()
    assert (got_b == exact).double().mean() >= (torch_b == exact).double().mean()


def test_threads_same_bits():
    h, dg = inputs(100_003, seed=3)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            runs.append((native.gelu_table(h), native.gelu_table_backward(dg, h)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(run, runs[0]))


def test_bad_inputs():
    h, dg = inputs(64)
    with pytest.raises(ValueError, match="bf16 input"):
        native.gelu_table(h.float())
    with pytest.raises(ValueError, match="not contiguous"):
        native.gelu_table(h.view(8, 8).t())
    with pytest.raises(ValueError, match=r"gradient of shape \(64,\)"):
        native.gelu_table_backward(dg[:32], h)


def test_model_step(monkeypatch, switch):
    """The masked-LM step under bf16 autocast takes the tables for the feed-forwards' and the head's GELU (no torch
    gelu in the step); its loss and gradients agree with the switch off to bf16 roundings."""
    calls = []
    original = native.gelu_table
    monkeypatch.setattr(native, "gelu_table", lambda h: (calls.append(h.shape), original(h))[1])
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:6] = ids[:, 2:6]
    runs = []
    for enabled in (False, True):
        kernels.use_table_gelu(enabled)
        model = ours(XmodForMaskedLM).train()
        with torch.profiler.profile() as prof, torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels).loss
            loss.backward()
        ops = {e.key for e in prof.key_averages()}
        runs.append((loss.item(), {k: p.grad for k, p in model.named_parameters()}, ops))
    (loss0, grads0, ops0), (loss1, grads1, ops1) = runs
    config = model.config
    # each feed-forward's, the head's, and (this tiny model's modules being the per-language loop) the modules'
    assert calls.count(torch.Size([*ids.shape, config.intermediate_size])) == config.num_hidden_layers
    assert calls.count(torch.Size([int(labels.ne(-100).sum()), config.hidden_size])) == 1  # the scored rows
    assert "aten::gelu" in ops0 and "aten::gelu_backward" in ops0
    assert "aten::gelu" not in ops1 and "aten::gelu_backward" not in ops1
    assert abs(loss1 - loss0) <= 1e-2 * abs(loss0)
    for name, g0 in grads0.items():
        g1 = grads1[name]
        assert (g0 is None) == (g1 is None), name
        if g0 is not None:
            assert maxdiff(g1, g0) <= 0.05 * g0.abs().max().item() + 1e-6, name


def test_not_taken_where_it_does_not_apply(monkeypatch, switch):
    """fp32 training, inference under autocast, and the switch off keep torch's GELU."""
    monkeypatch.setattr(native, "gelu_table", lambda h: pytest.fail("table GELU taken"))
    lin = torch.nn.Linear(64, 128)
    x = torch.randn(4, 64, requires_grad=True)
    kernels.linear.linear((lin,), x, act="gelu").sum().backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        kernels.linear.linear((lin,), x, act="gelu")
    kernels.use_table_gelu(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kernels.linear.linear((lin,), x, act="gelu").float().sum().backward()
