"""The language modules' vector kernel (native.c's xm_modules_vector, which native.modules takes where the tile kernels
are not available: AVX-512 bf16 pair products, no AMX) against float64 of the same bf16 inputs over several segment
layouts, with and without the residual and the norm; its bits on one and two threads; its input checks; and the
model's bf16 inference through it. Where this machine cannot build or run the vector kernels the tests skip and say
why."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import xmodlm.kernels as kernels
from xmodlm.kernels import modules as modules_mod
from xmodlm.kernels import native
from test_model import batch
from test_native import wide_model

pytestmark = pytest.mark.skipif(not native.vector_available(),
                                reason=f"own vector kernels not available: {native.vector_reason()}")


@pytest.fixture(autouse=True)
def vector_only(monkeypatch):
    """The tile kernels hidden, so that native.modules takes the vector twin wherever this runs (AMX processors too);
    the tile kernel's entry made to fail if it is called all the same."""
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(native._library(), "xm_modules", lambda *a: pytest.fail("tile kernel called"))


def weights(rows, d, r, seed=0):
    """Per segment: bf16 W1 (r, d), float32 b1, bf16 W2 (d, r), float32 b2 (None for odd segments)."""
    g = torch.Generator().manual_seed(seed)
    return [((torch.randn(r, d, generator=g) / math.sqrt(d)).bfloat16(), torch.randn(r, generator=g) * 0.3,
             (torch.randn(d, r, generator=g) / math.sqrt(r)).bfloat16(),
             None if i % 2 else torch.randn(d, generator=g) * 0.3) for i in range(len(rows))]


def reference(x, rows, params, residual, norm):
    """float64 of the kernel's computation on the same bf16 values: the inner product's GELU (erf) rounded to bf16
    (as the kernel stores it), the second product plus bias and residual, then the norm (of that sum rounded to bf16,
    as the kernel normalises its bf16 row)."""
    outs = []
    for part, (w1, b1, w2, b2) in zip(x.double().split(list(rows)), params):
        h = part @ w1.double().t() + b1.double()
        g = (h * 0.5 * torch.special.erfc(-h / math.sqrt(2))).bfloat16().double()
        outs.append(g @ w2.double().t() + (0 if b2 is None else b2.double()))
    y = torch.cat(outs)
    if residual is not None:
        y = y + residual.double()
    if norm is None:
        return y
    weight, bias, eps = norm
    y = y.bfloat16().double()
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + eps)
    return y * weight.double() + bias.double()


def call(x, rows, params, residual, norm):
    first = [(native.pack(w1), b1) for w1, b1, _, _ in params]
    second = [(native.pack(w2), b2) for _, _, w2, b2 in params]
    return native.modules(x, rows, first, second, residual, norm)


LAYOUTS = [(128,), (0, 1, 37, 0, 128), (5, 3, 7), (33, 1), (1,), (8, 0)]


@pytest.mark.parametrize("rows", LAYOUTS, ids=str)
@pytest.mark.parametrize("residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("norm", [True, False], ids=["norm", "no-norm"])
def test_the_modules_are_float64s_within_bf16_rounding(rows, residual, norm):
    """Each output within one bf16 rounding of float64's (plus float32 summation and the inner values' roundings
    that fall the other way), over empty segments, single rows, odd counts and whole 128-row segments."""
    d, r = 96, 64
    torch.manual_seed(1)
    x = torch.randn(sum(rows), d).bfloat16()
    params = weights(rows, d, r)
    other = torch.randn(sum(rows), d).bfloat16() if residual else None
    args = ((torch.randn(d) * 0.2 + 1).bfloat16(), (torch.randn(d) * 0.2).bfloat16(), 1e-5) if norm else None
    got = call(x, rows, params, other, args)
    assert got.dtype == torch.bfloat16 and got.shape == (sum(rows), d)
    want = reference(x, rows, params, other, args)
    error = (got.double() - want).abs()
    assert bool((error <= 2 ** -8 * want.abs() + 2e-2 * (1 if norm else 0.1)).all()), error.max()


def test_the_modules_at_xmod_base_width():
    """d 768, r 384 (xmod-base's modules), the post-norm and residual in the call."""
    rows, d, r = (128, 0, 3), 768, 384
    torch.manual_seed(2)
    x, other = torch.randn(sum(rows), d).bfloat16(), torch.randn(sum(rows), d).bfloat16()
    params = weights(rows, d, r, seed=3)
    args = (torch.ones(d).bfloat16(), torch.zeros(d).bfloat16(), 1e-5)
    got, want = call(x, rows, params, other, args), reference(x, rows, params, other, args)
    assert bool(((got.double() - want).abs() <= 2 ** -8 * want.abs() + 2e-2).all())


def test_one_and_two_threads_give_the_same_bits():
    rows, d, r = (70, 1, 0, 129), 96, 64
    torch.manual_seed(3)
    x, other = torch.randn(sum(rows), d).bfloat16(), torch.randn(sum(rows), d).bfloat16()
    params = weights(rows, d, r)
    args = (torch.ones(d).bfloat16(), None, 1e-5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = call(x, rows, params, other, args)
        torch.set_num_threads(1)
        one = call(x, rows, params, other, args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_strided_rows_are_read_where_they_are():
    rows, d, r = (20, 13), 64, 32
    torch.manual_seed(4)
    wide = torch.randn(sum(rows), 2 * d).bfloat16()
    x = wide[:, d:]
    params = weights(rows, d, r)
    assert torch.equal(call(x, rows, params, None, None), call(x.contiguous(), rows, params, None, None))


def test_bad_inputs_name_the_value():
    rows, d, r = (32,), 64, 32
    x = torch.randn(32, d).bfloat16()
    first = [(native.pack(torch.randn(r, d).bfloat16()), None)]
    second = [(native.pack(torch.randn(d, r).bfloat16()), None)]
    with pytest.raises(ValueError, match="torch.float32"):
        native.modules(x.float(), rows, first, second)
    with pytest.raises(ValueError, match=r"segments of \[30\] rows with 1 and 1 weights for an input of 32"):
        native.modules(x, (30,), first, second)
    with pytest.raises(ValueError, match=r"segments of \[16, 16\] rows with 1 and 1 weights"):
        native.modules(x, (16, 16), first, second)
    with pytest.raises(ValueError, match=r"residual of shape \(32, 64\)"):
        native.modules(x, rows, first, second, torch.randn(32, 32).bfloat16())
    with pytest.raises(ValueError, match=r"packed module weights of 64 x r values"):
        native.modules(x, rows, first, [(native.pack(torch.randn(d, 2 * r).bfloat16()), None)])
    with pytest.raises(ValueError, match=r"bf16 weight of shape \(64,\), got torch.float32"):
        native.modules(x, rows, first, second, None, (torch.ones(d), None, 1e-5))


def test_the_model_s_bf16_inference_through_the_kernel_is_as_accurate_as_plain_bf16(monkeypatch):
    """Without AMX, bf16 inference's modules (every layer, mixed languages, padded rows) in one call of the vector
    kernel a layer: no further from the fp32 model than torch's plain bf16 ops (the tolerance of test_native's
    test_model_inference_through_the_kernel_is_as_accurate_as_plain_bf16)."""
    model = wide_model()
    ids, mask = batch(b=6, t=40, lengths=[40, 31, 40, 7, 40, 22])
    langs, real = [0, 1, 2, 0, 1, 2], mask.bool()
    with torch.no_grad():
        exact = model(ids, attention_mask=mask, lang_ids=langs).last_hidden_state
    low = copy.deepcopy(model).to(torch.bfloat16)

    def run():
        with torch.no_grad():
            return low(ids, attention_mask=mask, lang_ids=langs).last_hidden_state.float()
    kernels.use_amx_kernels(False)
    kernels.use_onednn(False)
    try:
        plain = run()
    finally:
        kernels.use_amx_kernels(True)
        kernels.use_onednn(True)
    calls = []
    original = native.modules
    monkeypatch.setattr(native, "modules", lambda *a: calls.append(len(a[1])) or original(*a))
    fast = run()
    assert calls == [3, 3]  # one call a layer for the three languages' segments
    assert (fast - exact)[real].abs().max() <= 1.5 * (plain - exact)[real].abs().max() + 1e-3
    monkeypatch.setattr(modules_mod, "_own_kernel_applies", lambda *a: False)
    fast_off = run()
    assert calls == [3, 3] and (fast_off - exact)[real].abs().max() <= 1.5 * (plain - exact)[real].abs().max() + 1e-3
