"""The feed-forward's GELU inside the own kernel's products in bf16 autocast training (xmodlm.kernels.ffn, native.c's
xm_pack_float, xm_pack_float_transposed, xm_ffn_forward, xm_ffn_input_grad): the packings bit for bit against
torch's cast, the forward and the input gradient against float64, the same bits for any thread count, the model's
masked-LM step with the switch on and off, G read by something else than the output's product, and where the path
is and is not taken. Skipped where the own kernels cannot be built here."""

from __future__ import annotations

import math

import pytest
import torch

import xmodlm.kernels as kernels
from xmodlm.kernels import ffn, native
from xmodlm.kernels.linear import linear
from xmodlm.model import XmodForMaskedLM
from test_model import MIXED, batch
from tiny import ours

pytestmark = pytest.mark.skipif(not native.available(), reason=f"own AMX kernels not available: {native.reason()}")

U = 2.0 ** -8  # one bf16 rounding (relative)
TINY = 1e-36  # GELU's far negative tail below float32's normal range, flushed to zero (as the inference kernel's)


@pytest.fixture
def switch():
    """The switch on through the test, then as it was."""
    before = ffn.fused_training_gelu_on()
    kernels.use_fused_training_gelu(True)
    yield
    kernels.use_fused_training_gelu(before)


def gelu64(x):
    return x * 0.5 * torch.special.erfc(-x / math.sqrt(2))


def gelu_derivative64(x):
    return 0.5 * torch.special.erfc(-x / math.sqrt(2)) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def operands(rows, n, k, seed=0):
    """bf16 rows whose pre-activations (about N(0, 1)) reach far tails (rows scaled by 8 and 20: |x| up to 100,
    GELU's negative tail far below float32's range) and zero's neighbourhood (rows scaled by 1e-3), a float32
    weight and bias."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g)
    x[1::5] *= 8
    x[2::5] *= 20
    x[3::5] *= 1e-3
    weight = torch.randn(n, k, generator=g) / math.sqrt(k)
    bias = 0.1 * torch.randn(n, generator=g)
    bias[::7] = 0
    return x.bfloat16(), weight, bias


@pytest.mark.parametrize("n,k", [(1024, 256), (64, 96), (32, 32)])
def test_packings_are_torchs_cast_in_the_tile_layout(n, k):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(1)) * 3
    w[0, :5] = torch.tensor([0.0, -0.0, 1e30, -1e-3, 1 + 2 ** -8])  # a tie: rounds to even
    packed, copy = native.pack_float(w, copy=True)
    assert torch.equal(packed, native.pack(w.to(torch.bfloat16))) and torch.equal(copy, w.to(torch.bfloat16))
    assert native.pack_float(w)[1] is None and torch.equal(native.pack_float(w)[0], packed)
    w2 = w.t().contiguous()  # (k, n): packed as the right operand of x @ w2
    assert torch.equal(native.pack_float_transposed(w2), native.pack(w2.t().to(torch.bfloat16)))


def test_slope_table_is_float64_rounded_once():
    """The backward's gelu' table: every bf16 value's derivative in float64, rounded once to float32; 1 and 0 at
    +inf and -inf, NaN at NaN."""
    table = native.gelu_slopes()
    x = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).double()
    finite = x.isfinite()
    assert table.dtype == torch.float32 and table.shape == (65536,)
    assert torch.equal(table[finite], gelu_derivative64(x[finite]).float())
    assert table[0x7F80].item() == 1.0 and table[0xFF80].item() == 0.0 and table[0x7FC0].isnan()
    assert native.gelu_slopes() is table  # made once


def sums64(x, w16):
    """float64 x @ w16^T and the sums of the terms' magnitudes (the scale of float32 summation's error)."""
    return x.double() @ w16.double().t(), x.double().abs() @ w16.double().abs().t()


@pytest.mark.parametrize("rows,n,k", [(2048, 1024, 256), (77, 64, 96), (1, 32, 32), (300, 96, 64)])
def test_forward_against_float64(rows, n, k):
    """H within one bf16 rounding of the float64 pre-activation of the same bf16 operands (plus float32 summation's
    error, 1e-5 of the terms' magnitudes); G within one bf16 rounding of float64 GELU of it (plus the same error
    carried by GELU's slope, at most 1.13, and 2e-6 of the polynomial erf); below 1e-36, GELU's tail flushed."""
    x, weight, bias = operands(rows, n, k)
    packed, _ = native.pack_float(weight)
    h, g = native.ffn_forward(x, packed, bias.bfloat16().float(), n)
    pre, scale = sums64(x, weight.bfloat16())
    pre = pre + bias.bfloat16().double()
    summing = 1e-5 * (scale + bias.bfloat16().double().abs())
    assert h.shape == g.shape == (rows, n) and h.dtype == g.dtype == torch.bfloat16
    assert bool(((h.double() - pre).abs() <= U * pre.abs() + summing).all())
    assert (h != pre.bfloat16()).double().mean() < 1e-3  # otherwise correctly rounded
    want = gelu64(pre)
    assert bool(((g.double() - want).abs() <= (U + 2e-6) * want.abs() + 1.13 * summing + TINY).all())
    assert (g != want.bfloat16()).double().mean() < 0.02  # the misses: flushed tails, float32 near a boundary
    assert g.double().min() >= -0.17
    if rows > 3:  # the scaled rows there: the tails and zero's neighbourhood met
        assert bool((pre.abs() > 16).any()) and bool((pre.abs() < 1e-2).any())
    h0, g0 = native.ffn_forward(x, packed, None, n)
    assert bool(((h0.double() - (pre - bias.bfloat16().double())).abs() <= U * pre.abs() + 1e-5 * scale + 0.1).all())


@pytest.mark.parametrize("rows,n,k", [(2048, 1024, 256), (77, 64, 96), (1, 32, 32), (300, 96, 64)])
def test_input_gradient_against_float64(rows, n, k):
    """dH = (dY @ W2) gelu'(H) within one bf16 rounding of float64 (relative 2^-8), plus float32 summation's error
    (1e-5 of the terms' magnitudes) carried by gelu' (at most 1.13), plus 1e-7 of |dY @ W2| (gelu' is float64's
    rounded to float32, from a table); below 1e-36 flushed."""
    x, weight, bias = operands(rows, n, k, seed=2)
    h, _ = native.ffn_forward(x, native.pack_float(weight)[0], bias.bfloat16().float(), n)
    g = torch.Generator().manual_seed(3)
    dy = torch.randn(rows, k, generator=g).bfloat16()
    w2 = torch.randn(k, n, generator=g) / math.sqrt(k)  # the output's weight (k outputs of n inputs)
    dh = native.ffn_input_grad(dy, native.pack_float_transposed(w2), h)
    dg, scale = sums64(dy, w2.t().bfloat16())
    slope = gelu_derivative64(h.double())
    want = dg * slope
    assert dh.shape == (rows, n) and dh.dtype == torch.bfloat16
    error = (dh.double() - want).abs()
    assert bool((error <= U * want.abs() + 1.13 * 1e-5 * scale + 1e-7 * dg.abs() + TINY).all())
    assert (dh != want.bfloat16()).double().mean() < 0.03
    if rows > 3:
        assert bool(((h.double() < -16) & (dh == 0)).any()) and bool((h.double().abs() < 1e-2).any())


def test_the_same_bits_for_any_thread_count():
    x, weight, bias = operands(333, 128, 96, seed=4)
    packed, w2 = native.pack_float(weight)[0], torch.randn(96, 128)
    dy = torch.randn(333, 96).bfloat16()
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            h, g = native.ffn_forward(x, packed, bias, 128)
            runs.append((native.pack_float(weight)[0], native.pack_float_transposed(w2), h, g,
                         native.ffn_input_grad(dy, native.pack_float_transposed(w2), h)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


def test_input_checks():
    x, weight, bias = operands(8, 64, 32)
    packed, _ = native.pack_float(weight)
    with pytest.raises(ValueError, match="float32 2-d weight"):
        native.pack_float(weight.bfloat16())
    with pytest.raises(ValueError, match="multiples of 32"):
        native.pack_float_transposed(weight[:, :20].contiguous())
    with pytest.raises(ValueError, match="packed bf16 weight"):
        native.ffn_forward(x, packed[:100], None, 64)
    with pytest.raises(ValueError, match="float32 bias"):
        native.ffn_forward(x, packed, bias.bfloat16(), 64)
    h, _ = native.ffn_forward(x, packed, None, 64)
    with pytest.raises(ValueError, match="pre-activation"):
        native.ffn_input_grad(x, native.pack_float_transposed(weight.t().contiguous()), h[:4])


def model_step(enabled, seed=0, autocast=True, **overrides):
    """One masked-LM step of a tiny X-Mod (dropout on) under bf16 autocast with the switch as asked: the loss and
    every parameter's gradient."""
    kernels.use_fused_training_gelu(enabled)
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:7] = ids[:, 2:7]
    model = ours(XmodForMaskedLM, vocab_size=128, hidden_dropout_prob=0.1, **overrides).train()
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels).loss
    loss.backward()
    return loss.item(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def count_calls(monkeypatch):
    calls = {"forward": 0, "input_grad": 0}
    for name in calls:
        original = getattr(native, f"ffn_{name}")

        def counted(*args, name=name, original=original):
            calls[name] += 1
            return original(*args)
        monkeypatch.setattr(native, f"ffn_{name}", counted)
    return calls


def fp32_step(**overrides):
    """model_step without autocast: the float32 reference."""
    return model_step(False, autocast=False, **overrides)


def relative(got, want, names):
    """The relative error in norm of the gradients ``names`` taken together."""
    diff = sum((got[k] - want[k]).double().square().sum() for k in names)
    return (diff / sum(want[k].double().square().sum() for k in names)).sqrt().item()


@pytest.mark.parametrize("variant", [{}, dict(pre_norm=True, adapter_layer_norm=True)], ids=["post-norm", "pre-norm"])
def test_model_step_against_switch_off(monkeypatch, switch, variant):
    """Both paths round differently (G from the float32 pre-activation, not from H rounded; dH from float32 dG, not
    from dG rounded), and every later bf16 product carries a changed bit. Measured here: the loss 1e-4 relative
    apart, each parameter's gradient below 2% relative in norm (both paths are 2-3% from the float32 step's). So:
    the loss within 1e-3 relative, each gradient within 4% (the keys' biases, whose exact gradient is 0, in absolute
    terms against the largest gradient), and all gradients together no further from the float32 step's than
    1.25 x the switch off's."""
    calls = count_calls(monkeypatch)
    loss0, grads0 = model_step(False, **variant)
    assert calls == {"forward": 0, "input_grad": 0}
    loss1, grads1 = model_step(True, **variant)
    # both layers' feed-forwards once each way; the MLM head's dense + GELU takes the forward too, its G read by the
    # head's LayerNorm (the gradient through torch's gelu_backward, test_gradients_where_something_else_reads_g)
    assert calls == {"forward": 3, "input_grad": 2}
    assert abs(loss1 - loss0) <= 1e-3 * abs(loss0)
    assert grads1.keys() == grads0.keys()
    largest = max(g.norm().item() for g in grads0.values())
    for name, g0 in grads0.items():
        g1 = grads1[name]
        assert g1.dtype == g0.dtype == torch.float32, name
        if "key.bias" in name:
            assert (g1 - g0).norm().item() <= 1e-3 * largest, name
        else:
            assert (g1 - g0).norm().item() <= 4e-2 * g0.norm().item(), name
    _, reference = fp32_step(**variant)
    names = [k for k in reference if "key.bias" not in k]
    assert relative(grads1, reference, names) <= 1.25 * relative(grads0, reference, names)


def fused_pair(x, first, second, consumers):
    """The feed-forward through ``linear`` under autocast, G also read by ``consumers`` (a function of G added to
    the loss, or None): the output's and the inputs' and parameters' gradients."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = linear((first,), x, act="gelu")
        y = linear((second,), g)
        extra = None if consumers is None else consumers(g)
    loss = (y.float() * torch.linspace(-1, 1, y.shape[-1])).sum()
    if extra is not None:
        loss = loss + extra
    loss.backward()
    return y, [t.grad.clone() for t in (x, first.weight, first.bias, second.weight, second.bias)]


@pytest.mark.parametrize("consumers", [None, lambda g: (g.float() ** 2).sum(), "only"], ids=["fused", "both", "only"])
def test_gradients_where_something_else_reads_g(switch, consumers):
    """G read by the fused output's product, by it and something else (its gradient through torch's gelu_backward
    in the input product's backward), or by something else only: the gradients as the switch off gives them (the
    same products; GELU and its derivative rounded differently: within 2% relative in norm)."""
    runs = []
    for enabled in (False, True):
        kernels.use_fused_training_gelu(enabled)
        torch.manual_seed(0)
        first, second = torch.nn.Linear(64, 128), torch.nn.Linear(128, 64)
        x = torch.randn(3, 37, 64, requires_grad=True)
        if consumers == "only":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                g = linear((first,), x, act="gelu")
            assert enabled == (ffn._gelu_input(g) is not None)
            (g.float() * torch.linspace(-1, 1, 128)).sum().backward()
            runs.append([t.grad.clone() for t in (x, first.weight, first.bias)])
        else:
            runs.append(fused_pair(x, first, second, consumers)[1])
    for want, got in zip(*runs):
        assert got.dtype == want.dtype and (got - want).norm() <= 2e-2 * want.norm()


def test_g_changed_in_place_is_not_trusted(switch):
    first = torch.nn.Linear(64, 128)
    x = torch.randn(5, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = linear((first,), x, act="gelu")
        assert ffn._gelu_input(g) is not None
        g.mul_(2)
        assert ffn._gelu_input(g) is None  # the output's product then takes autocast_linear on the changed G


def profiled_ops(enabled, autocast=True):
    """How many times each op ran in a tiny model's masked-LM step (forward and backward)."""
    kernels.use_fused_training_gelu(enabled)
    ids, mask = batch()
    model = ours(XmodForMaskedLM, vocab_size=128).train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=ids).loss
        loss.backward()
    return {event.key: event.count for event in prof.key_averages()}


def test_path_taken_and_not_taken(switch):
    """The switch on: no GELU op of torch's in the two layers' feed-forwards either way; torch's gelu stays in the
    language modules (16 wide in the tiny model: not whole tiles of 32) and the MLM head's gelu_backward (its G read
    by a LayerNorm); with the switch off, without autocast: today's ops, GELU's both ways in every feed-forward."""
    on, off, fp32 = profiled_ops(True), profiled_ops(False), profiled_ops(True, autocast=False)
    layers = 2
    assert off["aten::gelu"] == fp32["aten::gelu"] == on.get("aten::gelu", 0) + layers + 1  # + 1: the head's
    assert off["aten::gelu_backward"] == fp32["aten::gelu_backward"] == on["aten::gelu_backward"] + layers
    assert "own AMX kernel" in kernels.describe_paths()["feed-forward GELU in bf16 autocast training (CPU)"]
    kernels.use_fused_training_gelu(False)
    assert "torch's" in kernels.describe_paths()["feed-forward GELU in bf16 autocast training (CPU)"]


def test_no_torch_gelu_where_every_gelu_is_fused(switch):
    """Language modules of whole tiles (32 wide) and no MLM head's LayerNorm reading G: with the switch on, no
    aten::gelu nor aten::gelu_backward in the step."""
    kernels.use_fused_training_gelu(True)
    ids, mask = batch()
    model = ours(XmodForMaskedLM, vocab_size=128, adapter_reduction_factor=1).train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = model.roberta(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED)).last_hidden_state
        h.float().square().sum().backward()
    ops = {event.key for event in prof.key_averages()}
    assert "aten::gelu" not in ops and "aten::gelu_backward" not in ops


def test_applies_only_where_asked(switch):
    first = torch.nn.Linear(64, 128)
    x = torch.randn(5, 64)
    onednn = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ffn._applies(x, first.weight, first.bias, onednn)
        assert ffn.fused_gelu_linear(x, first.weight, first.bias, "relu", onednn) is None
        assert ffn.fused_gelu_linear(x, first.weight, first.bias, None, onednn) is None  # no G: today's path
        assert not ffn._applies(x, first.weight, first.bias, False)  # oneDNN off
        assert not ffn._applies(x, torch.nn.Linear(64, 100).weight, None, onednn)  # not whole tiles of 32
        assert not ffn._applies(x, first.weight.bfloat16(), None, onednn)  # bf16 parameters
        with torch.no_grad():
            assert not ffn._applies(x, first.weight, first.bias, onednn)
        kernels.use_fused_training_gelu(False)
        assert not ffn._applies(x, first.weight, first.bias, onednn)
    kernels.use_fused_training_gelu(True)
    assert not ffn._applies(x, first.weight, first.bias, onednn)  # no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kernels.use_amx_kernels(False)
        try:
            assert not ffn._applies(x, first.weight, first.bias, onednn)
        finally:
            kernels.use_amx_kernels(True)
