"""Softmax attention in bf16 training through the own VECTOR kernels (native.c's xm_attention_train_vector and its
backward: AVX-512 bf16 pair products, no tile instruction), which native.training_attention and its backward call
where AMX is absent: the same checks as test_training_attention's for the tile kernels, the output and every
gradient against float64 on the same dropout mask, against dropout_attention under autocast, padding, a fully masked
row, lengths outside whole blocks, the same bits for any thread count, the gradient handed to the fused projection,
the model's masked-LM step with the kernel on and off, and the input checks. Skipped where the vector kernels cannot
be built here, and where the tile kernels run instead (test_training_attention covers those processors)."""

from __future__ import annotations

import pytest
import torch

import xmodlm.kernels as kernels
from xmodlm.kernels import attention as attention_module
from xmodlm.kernels import native
from xmodlm.kernels.attention import (_TrainingAttention, dropout_attention, native_training_applies,
                                      native_training_attention, native_training_on, use_native_training_attention)
from xmodlm.model import XmodForMaskedLM
from switches import switch_fixture
from test_model import assert_close_gradients, maxdiff
from test_training_attention import close_to, exact, heads_of, key_mask, mlm_step, projection
from tiny import ours

needs_vector_kernel = pytest.mark.skipif(
    native.available() or not native.vector_available(),
    reason="the tile kernels run here (test_training_attention)" if native.available()
    else f"vector kernels not available: {native.vector_reason()}")
pytestmark = needs_vector_kernel

switched_on = switch_fixture(use_native_training_attention, native_training_on)


@pytest.fixture
def every_shape(monkeypatch):
    """The vector kernel taken at every shape it can run (its speed gate off), the switch on."""
    monkeypatch.setattr(attention_module, "vector_training_faster", lambda q: True)
    before = native_training_on()
    use_native_training_attention(True)
    yield
    use_native_training_attention(before)


def test_the_vector_kernels_run_here():
    """native.training_attention takes the vector kernel: no tile kernel can run on this processor."""
    assert native._training_kernel("xm_attention_train") is native._library().xm_attention_train_vector
    assert (native._training_kernel("xm_attention_train_backward")
            is native._library().xm_attention_train_backward_vector)


@pytest.mark.parametrize("b,h,t,d,masked,dropout", [
    (2, 3, 128, 64, True, True),  # the benchmark's shape
    (3, 2, 100, 32, True, True),  # T outside whole blocks: padded inside the kernel
    (1, 2, 37, 96, False, True),  # odd T, d of 6 vectors (blocks of 4 and 2)
    (2, 1, 64, 64, False, False),  # no dropout
    (1, 2, 200, 128, True, True),
    (1, 1, 512, 32, True, True),  # the longest sequences
    (2, 2, 1, 32, False, True),  # one key
])
def test_forward_and_gradients_match_float64_on_the_same_mask(b, h, t, d, masked, dropout):
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


def test_the_saved_constants_are_each_rows_softmax():
    """stats[0] = -max c and stats[1] = 1 / sum (c = log2(e) / sqrt(D)) over each row's live keys, as the tile
    kernel saves them: the backward recomputes the probabilities from them."""
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


@pytest.mark.parametrize("scale", [8.0, 16.0])
def test_peaked_scores_match_float64(scale):
    """Most keys far below their row's maximum (float32 denormal exponentials, taken as 0): still float64's."""
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
def test_as_accurate_as_dropout_attention_under_autocast_with_its_mask(switched_on, t, d):
    """The same seed gives the same dropout mask as dropout_attention; the kernel's float32 scores make it at least
    as close to float64 as autocast's bf16 scores, output and gradients."""
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


def test_the_same_bits_for_one_and_two_threads():
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
        torch.set_num_threads(2)
        want = run()
        torch.set_num_threads(1)
        got = run()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_projections_gradient_is_the_kernels_buffer(every_shape):
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


def test_masked_lm_step_with_the_kernel_matches_dropout_attention(every_shape):
    """The model's bf16 autocast step with attention dropout (one head of 32 values): every layer takes the vector
    kernel, and the loss and every gradient agree with the switch off to bf16 rounding (the AMX test's tolerance)."""
    model = ours(XmodForMaskedLM, attention_probs_dropout_prob=0.1, num_attention_heads=1).train()
    kernel_loss, kernel_grads, calls = mlm_step(model, True)
    assert calls == [True] * model.config.num_hidden_layers  # each layer, the projection's gradient given directly
    plain_loss, plain_grads, calls = mlm_step(model, False)
    assert not calls
    assert abs(kernel_loss - plain_loss) <= 1e-2 * abs(plain_loss)
    assert_close_gradients(kernel_grads, plain_grads, 2e-2)


def test_it_steps_aside_where_it_does_not_apply(every_shape):
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


def test_the_speed_gate_decides_without_amx(switched_on, monkeypatch):
    """Without AMX the vector kernel is taken only where vector_training_faster says it was measured faster."""
    _, (q, k, v) = projection(2, 2, 16, 32)
    dropout = kernels.Dropout(0.1).train()
    monkeypatch.setattr(attention_module, "vector_training_faster", lambda q: False)
    assert not native_training_applies(q, k, v, None, dropout)
    monkeypatch.setattr(attention_module, "vector_training_faster", lambda q: True)
    assert native_training_applies(q, k, v, None, dropout)


def test_the_speed_gate_takes_the_measured_shapes():
    """vector_training_faster: the shapes measured faster (T up to 512, D up to 256), none beyond."""
    def heads(t, d):
        return torch.empty(1, 1, t, d, dtype=torch.bfloat16)
    assert attention_module.vector_training_faster(heads(128, 64))
    assert attention_module.vector_training_faster(heads(512, 256))
    assert not attention_module.vector_training_faster(heads(513, 64))
    assert not attention_module.vector_training_faster(heads(128, 288))


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
