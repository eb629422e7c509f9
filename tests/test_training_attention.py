"""Softmax attention in bf16 training through the own kernels (kernels.attention.native_training_attention,
native.training_attention and its backward): the tile kernels (native.c's xm_attention_train and its backward, AMX)
and the vector kernels (xm_attention_train_vector and its backward: AVX-512 bf16 pair products, no tile instruction),
which native.training_attention takes where the tile kernels are not available (``native._kernel``). Each
test runs once per kernel that can run here: the output and every gradient against float64 on the same dropout mask,
against today's dropout_attention under autocast, padding, a fully masked row, lengths outside whole tiles, the same
bits for any thread count, the gradient handed to the fused projection without copies, the model's masked-LM step
with the switch on and off, where it steps aside, and its input checks; for the vector kernels also the saved row
constants, the kernels taken and their speed gate (``attention.vector_training_faster``). For the vector kernels the
tile kernels are hidden (``native.available`` patched to False), so that they run on AMX processors too. Skipped,
with the reason, where a kernel cannot run here."""

from __future__ import annotations

import math

import pytest
import torch

import xmodlm.kernels as kernels
from xmodlm.kernels import attention as attention_module
from xmodlm.kernels import native
from xmodlm.kernels.attention import (_TrainingAttention, dropout_attention, native_training_applies,
                                      native_training_attention, native_training_on, use_native_training_attention)
from xmodlm.model import XmodForMaskedLM
from switches import switch_fixture
from test_model import MIXED, assert_close_gradients, batch, maxdiff
from tiny import ours

switched_on = switch_fixture(use_native_training_attention, native_training_on)


@pytest.fixture(autouse=True, params=["tile", "vector"])
def kernel(request, monkeypatch):
    """The kernels under test. For the vector kernels the tile kernels are hidden, so that native.training_attention
    and its backward take the vector ones wherever this runs, and the tile kernels' entries are made to fail if they
    are called all the same."""
    if request.param == "tile" and not native.available():
        pytest.skip(f"AMX kernel not available: {native.reason()}")
    if request.param == "vector":
        if not native.vector_available():
            pytest.skip(f"vector kernels not available: {native.vector_reason()}")
        monkeypatch.setattr(native, "available", lambda: False)
        for name in ("xm_attention_train", "xm_attention_train_backward"):
            monkeypatch.setattr(native._library(), name, lambda *a, name=name: pytest.fail(f"{name} called"))
    return request.param


@pytest.fixture
def every_shape(kernel, monkeypatch):
    """The vector kernels taken at every shape they can run (their speed gate off); nothing for the tile kernels,
    which have none."""
    if kernel == "vector":
        monkeypatch.setattr(attention_module, "vector_training_faster", lambda q: True)


def vector_only(kernel, why="a check of the vector kernels only"):
    if kernel != "vector":
        pytest.skip(why)


def projection(b, h, t, d, seed=0, scale=1.0):
    """A bf16 (B, T, 3 * H * D) leaf, as the fused QKV projection's output (values of ``scale`` standard
    deviation), and its q, k, v heads (as the model takes them)."""
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(b, t, 3 * h * d, generator=g)).bfloat16().requires_grad_()
    return x, heads_of(x, h, d)


def heads_of(x, h, d):
    b, t, _ = x.shape
    return x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)


def key_mask(b, t, empty_row=None):
    """(B, T) bool: row r keeps its first t - 3 r - 1 keys (at least one); row ``empty_row`` none."""
    keys = torch.ones(b, t, dtype=torch.bool)
    for row in range(b):
        keys[row, max(1, t - 3 * row - 1):] = False
    if empty_row is not None:
        keys[empty_row] = False
    return keys


def exact(q, k, v, keys, keep, drop_scale, dout):
    """Float64: the output and the gradients of q, k, v for dout, the same keep mask; rows without a key zero."""
    q, k, v = (x.detach().double().requires_grad_() for x in (q, k, v))
    s = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if keys is not None:
        s = s.masked_fill(~keys[:, None, None, :], -math.inf)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    if keep is not None:
        p = p * keep.double() * drop_scale
    out = p @ v
    return (out, *torch.autograd.grad(out, (q, k, v), dout.double()))


def close_to(got, want):
    """Within 2^-7 of the largest value (bf16 rounding of the result and of the probabilities) plus a little."""
    return maxdiff(got, want) <= 2 ** -7 * want.abs().max().item() + 1e-6


CASES = [
    (2, 3, 128, 64, True, True),  # the benchmark's tile shape
    (3, 2, 100, 32, True, True),  # T outside whole tiles (the vector kernels' blocks): padded inside the kernel
    (1, 2, 37, 96, False, True),  # odd T, d of 6 vectors (the vector kernels' blocks of 4 and 2)
    (2, 1, 64, 64, False, False),  # no dropout
    (1, 1, 512, 32, True, True),  # the longest sequences
]
VECTOR_CASES = [  # the vector kernels' further cases (the tile kernels were not tested at them)
    (1, 2, 200, 128, True, True),
    (2, 2, 1, 32, False, True),  # one key
]


@pytest.mark.parametrize("b,h,t,d,masked,dropout", CASES + VECTOR_CASES)
def test_forward_and_gradients_match_float64_on_the_same_mask(kernel, b, h, t, d, masked, dropout):
    if (b, h, t, d, masked, dropout) in VECTOR_CASES:
        vector_only(kernel, "a case of the vector kernels' tests only")
    x, (q, k, v) = projection(b, h, t, d)
    keys = key_mask(b, t) if masked else None
    g = torch.Generator().manual_seed(1)
    keep = (torch.rand(b, h, t, t, generator=g) > 0.1).to(torch.uint8) if dropout else None
    drop_scale = 1 / 0.9 if dropout else 1.0
    out = _TrainingAttention.apply(x, q.detach(), k.detach(), v.detach(), keys, keep, drop_scale)
    dout = torch.randn(out.shape, generator=g).bfloat16()
    (dx,) = torch.autograd.grad(out, x, dout)
    want = exact(q, k, v, keys, keep, drop_scale, dout)
    assert out.dtype == dx.dtype == torch.bfloat16 and out.shape == (b, h, t, d)
    assert close_to(out, want[0])
    for got, wanted in zip(heads_of(dx, h, d), want[1:]):
        assert close_to(got, wanted)
    # q, k, v given as their own tensors: their gradients, the same bits
    leaves = [y.detach().requires_grad_() for y in (q, k, v)]
    again = _TrainingAttention.apply(None, *leaves, keys, keep, drop_scale)
    assert torch.equal(again, out)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(again, leaves, dout), heads_of(dx, h, d)))


@pytest.mark.parametrize("scale", [8.0, 16.0])
def test_peaked_scores_match_float64(scale):
    """Scores of standard deviation 8 and 32 (q and k of ``scale``): most keys lie far below their row's maximum,
    where the exponentials would be float32 denormals; the kernel takes them as 0 (no slow denormal arithmetic)
    and still matches float64."""
    b, h, t, d = 2, 2, 128, 64
    x, (q, k, v) = projection(b, h, t, d, seed=3, scale=scale)
    out = _TrainingAttention.apply(x, q.detach(), k.detach(), v.detach(), None, None, 1.0)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(4)).bfloat16()
    (dx,) = torch.autograd.grad(out, x, dout)
    want = exact(q, k, v, None, None, 1.0, dout)
    assert close_to(out, want[0])
    for got, wanted in zip(heads_of(dx, h, d), want[1:]):
        assert close_to(got, wanted)


def test_a_row_with_every_key_masked_gives_zeros():
    x, (q, k, v) = projection(2, 2, 40, 32)
    keys = key_mask(2, 40, empty_row=1)
    keep = (torch.rand(2, 2, 40, 40) > 0.1).to(torch.uint8)
    out = _TrainingAttention.apply(x, q.detach(), k.detach(), v.detach(), keys, keep, 1 / 0.9)
    dout = torch.randn(out.shape).bfloat16()
    (dx,) = torch.autograd.grad(out, x, dout)
    assert torch.isfinite(out.float()).all() and torch.isfinite(dx.float()).all()
    assert not out[1].float().any() and not dx[1].float().any() and out[0].float().any()
    want = exact(q, k, v, keys, keep, 1 / 0.9, dout)
    assert close_to(out, want[0]) and all(close_to(a, b) for a, b in zip(heads_of(dx, 2, 32), want[1:]))


@pytest.mark.parametrize("t,d", [(128, 64), (200, 32), (32, 128)])
def test_as_accurate_as_dropout_attention_under_autocast_with_its_mask(switched_on, kernel, t, d):
    """The same seed gives the same dropout mask as today's path; the kernel's float32 scores make it at least as
    close to float64 as autocast's bf16 scores, output and gradients."""
    if (t, d) != (128, 64):
        vector_only(kernel, "a shape of the vector kernels' tests only")
    b, h = 2, 4
    dropout = kernels.Dropout(0.1).train()
    keys = key_mask(b, t)
    mask = keys[:, None, None, :]
    dout = torch.randn(b, h, t, d, generator=torch.Generator().manual_seed(2)).bfloat16()
    results = []
    for fn in (native_training_attention, dropout_attention):
        x, (q, k, v) = projection(b, h, t, d)
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(q, k, v, mask, dropout)
        results.append((out, *heads_of(torch.autograd.grad(out, x, dout)[0], h, d)))
    torch.manual_seed(3)
    keep, drop_scale = dropout.keep_mask(torch.empty(b, h, t, t))
    want = exact(q, k, v, keys, keep, drop_scale, dout)
    for ours_, theirs, wanted in zip(*results, want):
        assert ours_.dtype == torch.bfloat16
        assert maxdiff(ours_, wanted) <= 1.1 * maxdiff(theirs, wanted) + 1e-6
        assert maxdiff(ours_, theirs) <= 2 ** -5 * wanted.abs().max().item()  # the same mask: close


def test_the_same_bits_for_one_and_two_threads(kernel):
    _, (q, k, v) = projection(3, 2, 100, 64)
    keys, keep = key_mask(3, 100), (torch.rand(3, 2, 100, 100) > 0.1).to(torch.uint8)
    dout = torch.randn(3, 2, 100, 64).bfloat16()

    def run():
        out, stats = native.training_attention(q.detach(), k.detach(), v.detach(), keys, keep, 1 / 0.9)
        grads = native.training_attention_backward(dout, q.detach(), k.detach(), v.detach(), keys, keep, 1 / 0.9,
                                                   stats)
        return out, stats, grads
    threads = torch.get_num_threads()
    try:
        if kernel == "vector":  # 2 threads against 1 (the tile kernels: this process's thread count against 1)
            torch.set_num_threads(2)
        want = run()
        torch.set_num_threads(1)
        got = run()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_projections_gradient_is_the_kernels_buffer(switched_on, every_shape):
    """q, k, v the heads of one projection: its gradient comes back in its own layout, without the stack and the
    copy that autograd's unbind and reshape backward would make of three head gradients."""
    x = torch.randn(2, 64, 256).bfloat16().requires_grad_()
    h = torch.nn.functional.linear(x, torch.randn(3 * 2 * 64, 256).bfloat16())  # (B, T, 3 H D): backward an mm only
    q, k, v = heads_of(h, 2, 64)
    out = native_training_attention(q, k, v, None, kernels.Dropout(0.1).train(), h)
    assert out.grad_fn.name() == "_TrainingAttentionBackward"
    with torch.profiler.profile() as prof:
        out.backward(torch.ones_like(out))
    names = {event.name for event in prof.events()}
    assert "_TrainingAttentionBackward" in names
    copies = ("UnbindBackward", "aten::stack", "aten::cat", "aten::copy_", "aten::clone", "aten::contiguous")
    assert not any(op in name for name in names for op in copies), names


def mlm_step(model, native_attention: bool):
    """(loss, gradients, kernel calls) of one seeded masked-LM step under bf16 autocast with dropout on."""
    ids, mask = batch(lengths=[12, 9, 12, 5, 12])
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    calls, original, before = [], _TrainingAttention.apply, native_training_on()
    use_native_training_attention(native_attention)
    try:  # a call counted with whether it hands the gradient to the fused projection
        _TrainingAttention.apply = lambda *a: calls.append(a[0] is not None) or original(*a)
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, attention_mask=mask, lang_ids=MIXED, labels=labels).loss
        loss.backward()
    finally:
        _TrainingAttention.apply = original
        use_native_training_attention(before)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads, calls


def test_masked_lm_step_with_the_kernel_matches_dropout_attention(every_shape):
    """The model's bf16 autocast step with attention dropout (one head of 32 values: the kernel's smallest): every
    layer takes the kernel, and the loss and every gradient agree with the switch off to bf16 rounding."""
    model = ours(XmodForMaskedLM, attention_probs_dropout_prob=0.1, num_attention_heads=1).train()
    kernel_loss, kernel_grads, calls = mlm_step(model, True)
    assert calls == [True] * model.config.num_hidden_layers  # each layer, the projection's gradient given directly
    plain_loss, plain_grads, calls = mlm_step(model, False)
    assert not calls
    assert abs(kernel_loss - plain_loss) <= 1e-2 * abs(plain_loss)
    assert_close_gradients(kernel_grads, plain_grads, 2e-2)


def test_it_steps_aside_where_it_does_not_apply(switched_on, every_shape):
    _, (q, k, v) = projection(2, 2, 16, 32)
    dropout = kernels.Dropout(0.1).train()
    assert native_training_applies(q, k, v, None, dropout)
    assert not native_training_applies(q.float(), k.float(), v.float(), None, dropout)  # fp32 training
    assert not native_training_applies(q, k, v, None, torch.nn.Dropout(0.1))  # another dropout's mask
    assert native_training_applies(q, k, v, None, torch.nn.Dropout(0.0))  # none at all
    assert not native_training_applies(q, k, v, torch.ones(2, 1, 16, 16, dtype=torch.bool), dropout)  # not a key mask
    _, (q48, k48, v48) = projection(2, 2, 16, 48)
    assert not native_training_applies(q48, k48, v48, None, dropout)  # D not a multiple of 32
    with torch.no_grad():
        assert not native_training_applies(q, k, v, None, dropout)
    use_native_training_attention(False)
    assert not native_training_applies(q, k, v, None, dropout)


def test_bad_inputs_name_the_value():
    _, (q, k, v) = projection(2, 2, 16, 32)
    q, k, v = q.detach(), k.detach(), v.detach()
    keys, keep = key_mask(2, 16), torch.ones(2, 2, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="multiple of 32"):
        native.training_attention(*(y.detach() for y in projection(1, 1, 8, 48)[1]), None, None, 1.0)
    with pytest.raises(ValueError, match=r"bool key mask of shape \(2, 16\)"):
        native.training_attention(q, k, v, keys[:, :8], keep, 1.0)
    with pytest.raises(ValueError, match=r"uint8 keep mask of shape \(2, 2, 16, 16\)"):
        native.training_attention(q, k, v, keys, keep.bool(), 1.0)
    out, stats = native.training_attention(q, k, v, keys, keep, 1.0)
    with pytest.raises(ValueError, match="bf16 output gradient"):
        native.training_attention_backward(out.float(), q, k, v, keys, keep, 1.0, stats)
    with pytest.raises(ValueError, match="row constants"):
        native.training_attention_backward(out, q, k, v, keys, keep, 1.0, stats[0])


def test_the_vector_kernels_run_here(kernel):
    """native.training_attention takes the vector kernels where no tile kernel can run (here: hidden)."""
    vector_only(kernel)
    assert native._kernel("xm_attention_train") is native._library().xm_attention_train_vector
    assert (native._kernel("xm_attention_train_backward")
            is native._library().xm_attention_train_backward_vector)


def test_the_saved_constants_are_each_rows_softmax(kernel):
    """stats[0] = -max c and stats[1] = 1 / sum (c = log2(e) / sqrt(D)) over each row's live keys, as the tile
    kernel saves them: the backward recomputes the probabilities from them."""
    vector_only(kernel, "a check of the vector kernels' tests only (the tile kernels' constants not held to it)")
    b, h, t, d = 2, 2, 50, 64
    _, (q, k, v) = projection(b, h, t, d, seed=7)
    keys = key_mask(b, t)
    out, stats = native.training_attention(q.detach(), k.detach(), v.detach(), keys, None, 1.0)
    c = d ** -0.5 / torch.log(torch.tensor(2.0, dtype=torch.float64))
    s = (q.double() @ k.double().transpose(-1, -2)).masked_fill(~keys[:, None, None, :], -torch.inf)
    peak = s.max(-1).values
    total = torch.exp2((s - peak[..., None]) * c).sum(-1)
    assert torch.allclose(stats[0].double(), -peak * c, rtol=1e-5, atol=1e-5)
    assert torch.allclose(stats[1].double(), 1 / total, rtol=1e-5)


def test_the_speed_gate_decides_without_amx(switched_on, kernel, monkeypatch):
    """Without AMX the vector kernel is taken only where vector_training_faster says it was measured faster."""
    vector_only(kernel)
    _, (q, k, v) = projection(2, 2, 16, 32)
    dropout = kernels.Dropout(0.1).train()
    monkeypatch.setattr(attention_module, "vector_training_faster", lambda q: False)
    assert not native_training_applies(q, k, v, None, dropout)
    monkeypatch.setattr(attention_module, "vector_training_faster", lambda q: True)
    assert native_training_applies(q, k, v, None, dropout)


def test_the_speed_gate_takes_the_measured_shapes(kernel):
    """vector_training_faster: the shapes measured faster (T up to 512, D up to 256), none beyond."""
    vector_only(kernel)

    def heads(t, d):
        return torch.empty(1, 1, t, d, dtype=torch.bfloat16)
    assert attention_module.vector_training_faster(heads(128, 64))
    assert attention_module.vector_training_faster(heads(512, 256))
    assert not attention_module.vector_training_faster(heads(513, 64))
    assert not attention_module.vector_training_faster(heads(128, 288))
