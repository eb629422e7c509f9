"""The language modules in bf16 autocast training through the own kernel (``kernels.module_training``, native.c's
xm_modules_train*): against float64 math on the same bf16-rounded operands, thread counts, the model's masked-LM
step with the switch on and off, where the path is taken and where it must not be."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from switches import switch_fixture
from test_model import MIXED, batch, maxdiff
from tiny import ours

import xmodlm.kernels.module_training as module_training
from xmodlm.kernels import native, use_native_training_modules
from xmodlm.model import XmodForMaskedLM

pytestmark = pytest.mark.skipif(not native.available(), reason=f"own AMX kernels not available: {native.reason()}")

U = 2.0 ** -8  # a bf16 rounding (relative)


switch = switch_fixture(use_native_training_modules, module_training.native_training_modules_on)


def operands(rows, d, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(rows)
    x = torch.randn(n, d, generator=g).bfloat16()
    w1s = [torch.randn(r, d, generator=g) * d ** -0.5 for _ in rows]
    b1s = [torch.randn(r, generator=g) * 0.5 for _ in rows]
    w2s = [torch.randn(d, r, generator=g) * r ** -0.5 for _ in rows]
    b2s = [torch.randn(d, generator=g) * 0.5 for _ in rows]
    dy = torch.randn(n, d, generator=g).bfloat16()
    return x, w1s, b1s, w2s, b2s, dy


def bf(t):
    return t.to(torch.bfloat16).double()


def gelu_derivative(h):
    return torch.special.ndtr(h) + h * torch.exp(-h * h / 2) / (2 * torch.pi) ** 0.5


def within(got, want, bound):
    """|got - want| <= bound elementwise (float64)."""
    return bool(((got.double() - want).abs() <= bound).all())


# segments equal, unequal, one, empty, rows not multiples of 32 (1, 5, 37, 200), d 64..768, r 32..384
CASES = [([256] * 8, 256, 128), ([5, 37, 64], 64, 32), ([128, 3, 200], 768, 384), ([1], 96, 64),
         ([33, 70], 128, 96), ([31], 512, 256), ([7, 0, 40], 64, 32)]


@pytest.mark.parametrize("rows, d, r", CASES)
def test_against_float64(rows, d, r):
    """Each stored bf16 value within one bf16 rounding of float64 math on the kernel's own bf16 inputs to it, plus
    float32 sums' error (2e-6 of the sum of |terms|) and the GELU fit's (1e-5); the float32 gradients within float32
    sums' error of float64 sums of the same bf16 terms; and, whatever the bounds, every result within 1e-2 of its
    reference's norm (a wrong tile or a missed row fails that by far)."""
    x, w1s, b1s, w2s, b2s, dy = operands(rows, d, r, seed=len(rows) + d)
    y, slope, g, pairs = native.modules_train(x, rows, w1s, b1s, w2s, b2s)
    dx, dw1, db1, dw2, db2 = native.modules_train_backward(dy, x, slope, g, pairs, rows)
    for s, (w1, w2) in enumerate(zip(w1s, w2s)):  # the saved weights: the bf16 values, each once
        assert torch.equal(pairs[s, 0].sort().values, w2.bfloat16().flatten().sort().values)
        assert torch.equal(pairs[s, 1].sort().values, w1.bfloat16().flatten().sort().values)
    assert y.dtype == slope.dtype == g.dtype == dx.dtype == torch.bfloat16
    assert dw1.dtype == db1.dtype == dw2.dtype == db2.dtype == torch.float32
    assert dw1.shape == (len(rows), r, d) and dw2.shape == (len(rows), d, r) and db1.shape == (len(rows), r)
    start = 0
    for s, n in enumerate(rows):
        part = slice(start, start + n)
        start += n
        xs, dys = x[part].double(), dy[part].double()
        w1, w2, b1, b2 = bf(w1s[s]), bf(w2s[s]), b1s[s].double(), b2s[s].double()
        hd = xs @ w1.T + b1
        scale = xs.abs() @ w1.abs().T + b1.abs()  # H's float32 error is below 2e-6 of it; |gelu'| <= 1.13, |gelu''| < 1
        gd, sd = F.gelu(hd), gelu_derivative(hd)
        assert within(g[part], gd, U * gd.abs() + 2.3e-6 * scale + 1e-5)
        assert within(slope[part], sd, U * sd.abs() + 2e-6 * scale + 1e-5)
        g16, s16 = g[part].double(), slope[part].double()  # what the second product and the backward read
        yd = g16 @ w2.T + b2
        assert within(y[part], yd, U * yd.abs() + 2e-6 * (g16.abs() @ w2.abs().T + b2.abs()))
        dg = dys @ w2
        dh = dg * s16
        bound = U * dh.abs() + 2e-6 * (dys.abs() @ w2.abs()) * s16.abs()  # dH's rounding, dG's float32 sums
        dh16 = bf(dh)
        dh16_bound = bound + U * dh.abs()  # where the kernel's dH and float64's round apart
        assert within(db1[s], dh.sum(0), bound.sum(0) + 1e-6)
        dxd = dh16 @ w1
        assert within(dx[part], dxd, U * dxd.abs() + dh16_bound @ w1.abs() + 2e-6 * (dh16.abs() @ w1.abs()))
        assert within(dw1[s], dh16.T @ xs, dh16_bound.T @ xs.abs() + 2e-6 * (dh16.abs().T @ xs.abs()))
        assert within(dw2[s], dys.T @ g16, 2e-6 * (dys.abs().T @ g16.abs()) + 1e-12)
        assert within(db2[s], dys.sum(0), 2e-6 * dys.abs().sum(0) + 1e-12)
        for got, want in ((y[part], yd), (dx[part], dxd), (dw1[s], dh16.T @ xs), (db1[s], dh.sum(0)),
                          (dw2[s], dys.T @ g16), (db2[s], dys.sum(0))):
            assert (got.double() - want).norm() <= 1e-2 * want.norm() + 1e-9


def test_gelu_and_slope():
    """G and S on exact bf16 pre-activations over GELU's range (x W1^T with W1 the identity: H = x exactly): within
    one bf16 rounding plus 2e-6 (the erf fit's and the exponential's error)."""
    hvals = torch.linspace(-20, 20, 32 * 64).bfloat16().view(-1, 32)
    eye = torch.eye(32)
    _, slope, g, _ = native.modules_train(hvals, [64], [eye], [torch.zeros(32)], [eye], [torch.zeros(32)])
    hd = hvals.double()
    for got, want in ((g, F.gelu(hd)), (slope, gelu_derivative(hd))):
        assert within(got, want, U * want.abs() + 2e-6)


@pytest.mark.parametrize("rows, d, r", [([256] * 8, 256, 128), ([5, 37, 64, 200, 1], 64, 32), ([300], 128, 64)])
def test_threads_same_bits(rows, d, r):
    """Whole segments per thread: the same bits at 1, 2 and 3 threads (with one segment, one thread works)."""
    x, w1s, b1s, w2s, b2s, dy = operands(rows, d, r, seed=7)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            y, slope, g, pairs = native.modules_train(x, rows, w1s, b1s, w2s, b2s)
            runs.append((y, slope, g, pairs, *native.modules_train_backward(dy, x, slope, g, pairs, rows)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, c) for run in runs[1:] for a, c in zip(run, runs[0]))


@pytest.mark.parametrize("rows, d", [([256] * 8, 256), ([1, 0, 300, 37], 96), ([33, 64], 768)])
def test_db2_in_row_order(rows, d):
    """db2 (summed as dy^T is laid out, 32 columns at a time) is each segment's dy added row after row in float32:
    the same bits as that loop, for rows not multiples of 32, empty segments and column counts not multiples of 64."""
    x, w1s, b1s, w2s, b2s, dy = operands(rows, d, 32, seed=3)
    y, slope, g, pairs = native.modules_train(x, rows, w1s, b1s, w2s, b2s)
    db2 = native.modules_train_backward(dy, x, slope, g, pairs, rows)[4]
    start = 0
    for s, n in enumerate(rows):
        want = torch.zeros(d)
        for i in range(start, start + n):
            want += dy[i].float()
        assert torch.equal(db2[s], want)
        start += n


def test_unaligned_pairs():
    """The forward writes the backward's bf16 weights from the same rounding as its own (streamed, 64-byte aligned
    pairs), or by mt_pack_pairs where the pairs' address is not aligned: the same values either way."""
    import ctypes

    rows, d, r = [37, 0, 64], 96, 64
    x, w1s, b1s, w2s, b2s, _ = operands(rows, d, r, seed=5)
    y, slope, g, pairs = native.modules_train(x, rows, w1s, b1s, w2s, b2s)
    buffer = torch.empty(pairs.numel() + 32, dtype=torch.bfloat16)
    shifted = buffer[1:1 + pairs.numel()]  # 2 bytes past a 64-byte boundary
    y2, slope2, g2 = torch.empty_like(y), torch.empty_like(slope), torch.empty_like(g)
    n = len(rows)
    addresses = [(ctypes.c_uint64 * n)(*(t.data_ptr() for t in ts)) for ts in (w1s, b1s, w2s, b2s)]
    assert native._library().xm_modules_train(n, (ctypes.c_int64 * n)(*rows), *addresses, x.data_ptr(), d, r,
                                              slope2.data_ptr(), g2.data_ptr(), y2.data_ptr(), shifted.data_ptr()) == 0
    assert torch.equal(shifted, pairs.flatten()) and torch.equal(y2, y) and torch.equal(slope2, slope)
    assert torch.equal(g2, g)


def test_bad_inputs():
    x, w1s, b1s, w2s, b2s, dy = operands([4, 4], 64, 32)
    with pytest.raises(ValueError, match="segments"):
        native.modules_train(x, [4, 5], w1s, b1s, w2s, b2s)
    with pytest.raises(ValueError, match="weights"):
        native.modules_train(x, [4, 4], [w.bfloat16() for w in w1s], b1s, w2s, b2s)
    with pytest.raises(ValueError, match="float32 module weights and biases"):
        native.modules_train(x, [4, 4], w1s, [b[:16] for b in b1s], w2s, b2s)
    y, slope, g, pairs = native.modules_train(x, [4, 4], w1s, b1s, w2s, b2s)
    with pytest.raises(ValueError, match="dy"):
        native.modules_train_backward(dy.float(), x, slope, g, pairs, [4, 4])
    with pytest.raises(ValueError, match="pairs"):
        native.modules_train_backward(dy, x, slope, g, pairs[:1], [4, 4])


def model_config(**overrides):
    # d 64, r 32: the kernel's whole tiles; 3 languages in MIXED's 5 rows
    return {"hidden_size": 64, "adapter_reduction_factor": 2, "vocab_size": 128, **overrides}


def spy(monkeypatch):
    calls = []
    forward = native.modules_train

    def counted(x, rows, *args):
        calls.append(tuple(rows))
        return forward(x, rows, *args)
    monkeypatch.setattr(native, "modules_train", counted)
    return calls


def mlm_step(enabled, dtype=torch.bfloat16, **overrides):
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:6] = ids[:, 2:6]
    use_native_training_modules(enabled)
    model = ours(XmodForMaskedLM, **model_config(**overrides)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels).loss
    loss.backward()
    return loss, {k: p.grad for k, p in model.named_parameters()}


@pytest.mark.parametrize("variant", [{}, dict(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False,
                                              ln_before_adapter=False)])
def test_model_step(variant, monkeypatch, switch):
    """The bf16 autocast masked-LM step takes the kernel in each layer (3 segments of 2, 1, 2 examples x 12 tokens);
    loss within 2e-3 relative of the switch off (the modules' outputs differ by bf16 roundings: the biases added in
    float32, G from the float32 H; seen: 5e-4), every gradient within 6% of its largest value of the switch off's
    (seen: up to 4.3%, the modules' own through two layers of bf16 arithmetic; autocast itself is up to 7% from the
    float32 step here), and on average over the parameters no further from the float32 step's gradients than the
    switch off's (seen: 0.8-0.9 times). The keys' bias is left out: its exact gradient is zero (softmax does not
    change when all of a query's scores shift), both runs give bf16 noise."""
    calls = spy(monkeypatch)
    loss32, grads32 = mlm_step(False, dtype=torch.float32, **variant)
    loss0, grads0 = mlm_step(False, **variant)
    assert calls == []
    loss1, grads1 = mlm_step(True, **variant)
    assert calls == [(24, 12, 24)] * 2
    assert abs(loss1.item() - loss0.item()) <= 2e-3 * abs(loss0.item())
    modules = [k for k in grads0 if "adapter_modules" in k and "dense" in k]
    assert len(modules) == 2 * 3 * 4
    errors = {0: [], 1: []}
    for name, g0 in grads0.items():
        g1 = grads1[name]
        assert (g0 is None) == (g1 is None), name
        if g0 is None or name.endswith("key.bias"):
            continue
        assert g1.dtype == torch.float32
        assert maxdiff(g1, g0) <= 6e-2 * g0.abs().max().item() + 1e-7, name
        for i, g in ((0, g0), (1, g1)):
            errors[i].append(maxdiff(g, grads32[name]) / grads32[name].abs().max().item())
    assert sum(errors[1]) <= 1.1 * sum(errors[0])


def test_model_step_graph(switch):
    """Eight languages of one example each (the batched path's case): with the switch on the modules' baddbmm (forward)
    and bmm (backward) are gone from the step, the Function is there, one call per layer; with it off they are back."""
    codes = ["en_XX", "de_DE", "fr_XX", "es_XX", "it_IT", "ru_RU", "zh_CN", "ja_XX"]
    ids, mask = batch(b=8)
    labels = torch.full_like(ids, -100)
    labels[:, 2:6] = ids[:, 2:6]
    for enabled in (True, False):
        use_native_training_modules(enabled)
        model = ours(XmodForMaskedLM, **model_config(languages=codes)).train()
        with torch.profiler.profile() as prof:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(ids, attention_mask=mask, lang_ids=torch.arange(8), labels=labels).loss
            loss.backward()
        counts = {e.key: e.count for e in prof.key_averages()}
        assert counts.get("_NativeTrainingModules", 0) == (2 if enabled else 0)
        assert counts.get("_NativeTrainingModulesBackward", 0) == (2 if enabled else 0)
        assert ("aten::baddbmm" in counts) != enabled and ("aten::bmm" in counts) != enabled


def test_not_taken(monkeypatch, switch):
    """Not taken: the switch off, fp32 training (no autocast), a module shared by all languages, no autograd,
    inference, r not a multiple of 32."""
    calls = spy(monkeypatch)
    mlm_step(False)
    mlm_step(True, dtype=torch.float32)
    mlm_step(True, shared_module=True)
    mlm_step(True, adapter_reduction_factor=4)  # r = 16
    assert calls == []
    model = ours(XmodForMaskedLM, **model_config()).train()
    ids, mask = batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED))
        model.eval()(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED))
    assert calls == []
    h = torch.randn(4, 64)
    mods = list(model.roberta.encoder.layer[0].output.adapter_modules.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module_training.native_modules_apply(h, mods, True)
        assert not module_training.native_modules_apply(h, mods, False)
        assert not module_training.native_modules_apply(h, [mods[0], mods[0], mods[1]], True)
        assert not module_training.native_modules_apply(h.t(), mods, True)
