"""The linears' weight and bias gradients in bf16 autocast training through the own kernels
(``kernels.amp.use_native_weight_grad``): the tile kernel (native.c's xm_weight_grad, AMX) and the vector kernel
(xm_weight_grad_vector: AVX-512 bf16 products, no tile instruction), which ``native.weight_grad`` takes where the tile
kernel is not available. Each test runs once per kernel that can run here: against float64 sums of the same bf16
operands, thread counts, bad input, the path inside ``autocast_linear`` and the model's masked-LM step. For the vector
kernel the tile kernels are hidden (``native.available`` patched to False), so that it runs on AMX processors too."""

from __future__ import annotations

import pytest
import torch

from switches import switch_fixture
from test_model import MIXED, batch, maxdiff
from tiny import ours

import xmodlm.kernels.amp as amp
from xmodlm import kernels
from xmodlm.kernels import native, use_native_weight_grad
from xmodlm.model import XmodForMaskedLM


U = 2.0 ** -8  # a bf16 rounding (relative)
# odd and even T, T = 1; N and K multiples of 32 of several sizes; at T = 2048 X is taken in chunks of 128 columns,
# so K = 1024 and 288 take several (the last of 288 narrower)
SHAPES = [(2048, 768, 256), (2048, 256, 1024), (2048, 96, 288), (303, 3200, 256), (300, 96, 64), (37, 64, 96),
          (1, 32, 32), (2, 32, 32), (33, 32, 64)]


switch = switch_fixture(use_native_weight_grad, amp.native_weight_grad_on)


ENTRY = {"tile": "xm_weight_grad", "vector": "xm_weight_grad_vector"}


@pytest.fixture(autouse=True, params=["tile", "vector"])
def kernel(request, monkeypatch):
    """The kernel under test (its entry's name in the library). For the vector kernel the tile kernels are hidden, so
    that native.weight_grad takes it wherever this runs, and the tile kernel's entry is made to fail if it is called
    all the same."""
    if request.param == "tile" and not native.available():
        pytest.skip(f"own AMX kernels not available: {native.reason()}")
    if request.param == "vector":
        if not native.vector_available():
            pytest.skip(f"own vector kernels not available: {native.vector_reason()}")
        monkeypatch.setattr(native, "available", lambda: False)
        monkeypatch.setattr(native._library(), "xm_weight_grad", lambda *a: pytest.fail("tile kernel called"))
    return ENTRY[request.param]


def operands(t, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, n, generator=g).bfloat16(), torch.randn(t, k, generator=g).bfloat16()


@pytest.mark.parametrize("t, n, k", SHAPES)
def test_against_float64(t, n, k):
    """dW and db are float32 sums of the exact bf16 products: within float32's summation error of the float64 sums
    (relative to the sums of the terms' magnitudes; a row or column left out, or a term rounded to bf16, is far
    outside)."""
    dy, x = operands(t, n, k)
    dw, db = native.weight_grad(dy, x)
    assert dw.dtype == db.dtype == torch.float32 and dw.shape == (n, k) and db.shape == (n,)
    dyd, xd = dy.double(), x.double()
    terms = dyd.abs().t() @ xd.abs()
    assert ((dw.double() - dyd.t() @ xd).abs() <= 1e-6 * terms + 1e-30).all()
    assert ((db.double() - dyd.sum(0)).abs() <= 1e-6 * dyd.abs().sum(0) + 1e-30).all()


def test_more_precise_than_bf16():
    """The float32 sums are nearer float64's than the bf16 product autocast's backward runs (rounded to bf16)."""
    dy, x = operands(2048, 256, 256, seed=4)
    exact = dy.double().t() @ x.double()
    dw, _ = native.weight_grad(dy, x)
    assert (dw.double() - exact).abs().max() < (dy.t().mm(x).double() - exact).abs().max() / 10


def test_without_bias_rows_and_strides():
    """No db when not asked; no rows: zeros; row strides other than the width (views of wider rows) read right."""
    dy, x = operands(71, 64, 128, seed=1)
    full_w, full_b = native.weight_grad(dy, x)
    dw, db = native.weight_grad(dy, x, bias_grad=False)
    assert db is None and torch.equal(dw, full_w)
    wide_dy, wide_x = torch.zeros(71, 96, dtype=torch.bfloat16), torch.zeros(71, 160, dtype=torch.bfloat16)
    wide_dy[:, 16:80], wide_x[:, 32:160] = dy, x
    got = native.weight_grad(wide_dy[:, 16:80], wide_x[:, 32:160])
    assert torch.equal(got[0], full_w) and torch.equal(got[1], full_b)
    dw, db = native.weight_grad(dy[:0], x[:0])
    assert dw.shape == (64, 128) and not dw.any() and not db.any()


def test_zero_rows_in_the_kernel(kernel):
    """T = 0 in the vector kernel itself (native.weight_grad returns before calling either kernel): dW and db
    zeroed. The tile kernel was never asked to take T = 0, so it is not held to it."""
    if kernel != "xm_weight_grad_vector":
        pytest.skip("the tile kernel is not called with T = 0 (native.weight_grad returns before)")
    dw, db = torch.full((32, 64), 7.0), torch.full((32,), 7.0)
    empty = torch.zeros(0, 64, dtype=torch.bfloat16)
    assert getattr(native._library(), kernel)(empty.data_ptr(), 32, empty.data_ptr(), 64, 0, 32, 64, dw.data_ptr(),
                                              db.data_ptr()) == 0
    assert not dw.any() and not db.any()


@pytest.mark.parametrize("t, n, k", [(2048, 256, 256), (2048, 64, 1024), (301, 96, 64), (2048, 96, 288)])
def test_threads_same_bits(t, n, k):
    dy, x = operands(t, n, k, seed=2)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            runs.append(native.weight_grad(dy, x))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, c) for run in runs[1:] for a, c in zip(run, runs[0]))


@pytest.mark.parametrize("t, n, k", [(2048, 96, 288), (4000, 96, 320), (303, 96, 800), (77, 160, 96), (31, 32, 32)])
def test_each_block_of_columns_is_summed_as_alone(t, n, k):
    """Every block of 32 of dY's columns gives the same dW rows and db bits as the kernel on that block's columns
    alone, however the blocks are scheduled (odd block counts; several of X's chunks, the last narrower; odd T)."""
    dy, x = operands(t, n, k, seed=3)
    dw, db = native.weight_grad(dy, x)
    for nb in range(n // 32):
        alone = native.weight_grad(dy[:, 32 * nb:32 * nb + 32].contiguous(), x)
        assert torch.equal(dw[32 * nb:32 * nb + 32], alone[0]) and torch.equal(db[32 * nb:32 * nb + 32], alone[1])


def test_bad_inputs():
    dy, x = operands(8, 32, 64)
    with pytest.raises(ValueError, match="bf16"):
        native.weight_grad(dy.float(), x)
    with pytest.raises(ValueError, match=r"multiples of 32.*\(8, 48\)"):
        native.weight_grad(torch.zeros(8, 48, dtype=torch.bfloat16), x)
    with pytest.raises(ValueError, match=r"\(9, 64\)"):
        native.weight_grad(dy, torch.zeros(9, 64, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="contiguous rows"):
        native.weight_grad(dy.t(), x[:, :8].t().contiguous().t())


def linear_grads(lin, x, grad):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = kernels.linear.linear((lin,), x)
    y.backward(grad)
    out = (x.grad, lin.weight.grad, lin.bias.grad)
    x.grad = lin.weight.grad = lin.bias.grad = None
    return out


def spy_kernel(monkeypatch, kernel):
    """The shapes (T, N, K) the kernel under test is called with, recorded as it runs."""
    calls = []
    lib = native._library()
    original = getattr(lib, kernel)
    monkeypatch.setattr(lib, kernel, lambda *a: (calls.append(a[4:7]), original(*a))[1])
    return calls


def test_autocast_linear_takes_it(monkeypatch, switch, kernel):
    """Under bf16 autocast training a linear's dW and db come from the kernel, float32 and nearer float64's
    sums than addmm's bf16 ones; dX is the same bits either way; switched off the kernel is not called."""
    calls = spy_kernel(monkeypatch, kernel)
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 96)
    x = torch.randn(5, 40, 64, requires_grad=True)
    grad = torch.randn(5, 40, 96).bfloat16()
    on = linear_grads(lin, x, grad)
    assert calls == [(200, 96, 64)]
    use_native_weight_grad(False)
    off = linear_grads(lin, x, grad)
    assert len(calls) == 1
    assert torch.equal(on[0], off[0])
    g2, x2 = grad.reshape(-1, 96).double(), x.detach().reshape(-1, 64).bfloat16().double()
    exact_w, exact_b = g2.t() @ x2, g2.sum(0)
    for got, other, exact in ((on[1], off[1], exact_w), (on[2], off[2], exact_b)):
        assert got.dtype == other.dtype == torch.float32
        assert maxdiff(got, other) <= 2 * U * other.abs().max().item()  # within a bf16 rounding of addmm's
        assert (got.double() - exact).abs().max() <= 1e-5 * exact.abs().max()  # addmm's is off by up to U
        assert (got.double() - exact).abs().max() < (other.double() - exact).abs().max()


def test_not_taken_where_it_does_not_apply(monkeypatch, switch):
    """Widths not in whole tiles of 32, or no autocast: no kernel call."""
    monkeypatch.setattr(native, "weight_grad", lambda *a, **k: pytest.fail("kernel called"))
    lin = torch.nn.Linear(12, 9)
    x = torch.randn(4, 12, requires_grad=True)
    linear_grads(lin, x, torch.randn(4, 9).bfloat16())
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(4, 64, requires_grad=True)
    kernels.linear.linear((lin,), x).sum().backward()


def test_model_step(monkeypatch, switch, kernel):
    """The masked-LM step under bf16 autocast: the same loss (the forward is unchanged) and every gradient within
    bf16 roundings of the step with the switch off, the linears' weight gradients through the kernel."""
    calls = spy_kernel(monkeypatch, kernel)
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:6] = ids[:, 2:6]
    runs = []
    for enabled in (False, True):
        use_native_weight_grad(enabled)
        model = ours(XmodForMaskedLM, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                     adapter_reduction_factor=2).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels).loss
        loss.backward()
        runs.append((loss, {k: p.grad for k, p in model.named_parameters()}))
        assert bool(calls) == enabled
    (loss0, grads0), (loss1, grads1) = runs
    assert loss1.item() == loss0.item()
    dense = "roberta.encoder.layer.0.intermediate.dense.weight"
    assert grads1[dense].dtype == torch.float32 and not torch.equal(grads1[dense], grads0[dense])
    for name, g0 in grads0.items():
        g1 = grads1[name]
        assert (g0 is None) == (g1 is None), name
        if g0 is not None:
            assert maxdiff(g1, g0) <= 8 * U * g0.abs().max().item() + 1e-7, name
