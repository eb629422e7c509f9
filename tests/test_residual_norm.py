"""LayerNorm(dropout(h) + residual) in bf16 autocast training through the own kernel
(xmodlm.kernels.residual_norm, native.residual_norm): against torch's ops (dropout's addcmul, the sum, LayerNorm)
forward and backward with the same mask, the same bits for any thread count, the model's masked-LM step with it on
and off, where it steps aside, and its input checks. Skipped where the own kernels cannot be built here."""

from __future__ import annotations

import pytest
import torch

import xmodlm.kernels as kernels
from xmodlm.kernels import native
from xmodlm.kernels.dropout import _MaskAndScale
from xmodlm.kernels.residual_norm import dropout_residual_norm, use_fused_residual_norm
from xmodlm.model import XmodAdapter, XmodForMaskedLM
from test_model import MIXED, assert_close_gradients, batch, maxdiff
from tiny import ours, tiny_config

needs_vector_kernel = pytest.mark.skipif(not native.vector_available(),
                                         reason=f"own vector kernels not available: {native.vector_reason()}")


def torch_chain(h, keep, scale, residual, norm):
    """What the model runs without the kernel: dropout's one-pass mask and scale in bf16, the sum, LayerNorm."""
    s = h if keep is None else _MaskAndScale.apply(h, keep, scale)
    return torch.nn.functional.layer_norm(s + residual, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def inputs(rows=300, d=64, seed=0, dropout=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, d, generator=g).bfloat16().requires_grad_()
    residual = (2 * torch.randn(rows, d, generator=g) + 0.5).requires_grad_()
    norm = kernels.LayerNorm(d)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(d, generator=g))
        norm.bias.copy_(0.3 * torch.randn(d, generator=g))
    keep = (torch.rand(rows, d, generator=g) > 0.1).to(torch.uint8) if dropout else None
    return h, keep, 1 / 0.9, residual, norm


@needs_vector_kernel
@pytest.mark.parametrize("dropout", [True, False], ids=["dropout", "no-dropout"])
def test_forward_and_backward_are_torchs_chain_to_float32_rounding(dropout):
    h, keep, scale, residual, norm = inputs(dropout=dropout)
    got, twin = kernels.residual_norm._ResidualNorm.apply(h, residual, norm.weight, norm.bias, keep, scale, norm.eps,
                                                          False)
    assert twin is None
    dy = torch.randn(got.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(got, (h, residual, norm.weight, norm.bias), dy)
    want = torch_chain(h, keep, scale, residual, norm)
    wants = torch.autograd.grad(want, (h, residual, norm.weight, norm.bias), dy)
    assert got.dtype == torch.float32 and maxdiff(got, want) <= 1e-5 * want.abs().max()
    dh, dresidual, dweight, dbias = grads
    assert dh.dtype == torch.bfloat16 and dresidual.dtype == torch.float32
    assert maxdiff(dresidual, wants[1]) <= 1e-5 * wants[1].abs().max()
    assert maxdiff(dweight, wants[2]) <= 1e-5 * wants[2].abs().max()
    assert maxdiff(dbias, wants[3]) <= 1e-5 * wants[3].abs().max()
    # h's gradient rounds to bf16 (twice, as torch's cast and addcmul do): a float32 difference in the last bits
    # can move a value across a rounding boundary, never further than one bf16 step
    off = dh != wants[0]
    assert off.float().mean() < 0.01
    assert bool(((dh.float() - wants[0].float()).abs() <= 2 ** -7 * wants[0].float().abs() + 1e-30).all())
    if keep is not None:
        assert not dh[keep == 0].any()


@needs_vector_kernel
def test_the_same_bits_for_any_thread_count():
    h, keep, scale, residual, norm = inputs(rows=1000)
    y, t, mean, rstd, _ = native.residual_norm(h.detach(), keep, scale, residual.detach(), norm.weight.detach(),
                                               norm.bias.detach(), norm.eps)
    dy, dy16 = torch.randn(y.shape), torch.randn(y.shape).bfloat16()
    want = native.residual_norm_backward(dy, t, mean, rstd, norm.weight.detach(), keep, scale, dy16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = native.residual_norm(h.detach(), keep, scale, residual.detach(), norm.weight.detach(),
                                     norm.bias.detach(), norm.eps)
        got = native.residual_norm_backward(dy, t, mean, rstd, norm.weight.detach(), keep, scale, dy16)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(again[0], y) and all(torch.equal(a, b) for a, b in zip(got, want))


def mlm_step(model, fused: bool):
    """(loss, gradients) of one seeded masked-LM step under bf16 autocast with dropout on."""
    ids, mask = batch(lengths=[12, 9, 12, 5, 12])
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    use_fused_residual_norm(fused)
    try:
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(ids, attention_mask=mask, lang_ids=MIXED, labels=labels).loss
        loss.backward()
    finally:
        use_fused_residual_norm(True)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


@needs_vector_kernel
def test_masked_lm_step_with_the_kernel_matches_torchs_ops(monkeypatch):
    """The model's bf16 autocast step, dropout on: the kernel runs at every post-norm (two a layer here), and the
    loss and every gradient agree with torch's ops to bf16 rounding."""
    model = ours(XmodForMaskedLM, hidden_dropout_prob=0.1).train()
    calls, original = [], kernels.residual_norm._ResidualNorm.apply
    monkeypatch.setattr(kernels.residual_norm._ResidualNorm, "apply", lambda *a: calls.append(1) or original(*a))
    fused_loss, fused_grads = mlm_step(model, True)
    assert len(calls) == 2 * model.config.num_hidden_layers
    calls.clear()
    plain_loss, plain_grads = mlm_step(model, False)
    assert not calls
    assert abs(fused_loss - plain_loss) <= 1e-3 * abs(plain_loss)
    assert_close_gradients(fused_grads, plain_grads, 2e-2)


@needs_vector_kernel
def test_batched_language_modules_in_training_take_it(monkeypatch):
    """Many languages in training (padded batched matmuls): the module's dropout, residual and norm in the kernel,
    as the per-language loop computes them to bf16 rounding."""
    config = tiny_config()
    rows = (2, 2, 2, 1, 2, 2, 2, 2, 2, 2)
    modules = [XmodAdapter(config).train() for _ in rows]
    dropout, norm = kernels.Dropout(0.1).train(), kernels.LayerNorm(config.hidden_size)
    h = torch.randn(sum(rows), 5, config.hidden_size)
    skip = (h + torch.randn_like(h)).requires_grad_()
    dy = torch.randn(h.shape)  # not y itself: LayerNorm's gradient of y.pow(2).sum() cancels to rounding noise
    calls, original = [], kernels.residual_norm._ResidualNorm.apply
    monkeypatch.setattr(kernels.residual_norm._ResidualNorm, "apply", lambda *a: calls.append(1) or original(*a))
    results = []
    for fused in (True, False):
        use_fused_residual_norm(fused)
        try:
            torch.manual_seed(1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = kernels.run_language_modules(rows, modules, h, skip, dropout, True, torch.nn.Module(), norm)
        finally:
            use_fused_residual_norm(True)
        results.append((y, torch.autograd.grad(y, skip, dy)[0]))
    (fused_y, fused_grad), (plain_y, plain_grad) = results
    assert calls == [1]  # the fused call only
    assert fused_y.dtype == plain_y.dtype == torch.float32
    assert maxdiff(fused_y, plain_y) <= 1e-5 * plain_y.abs().max()
    assert maxdiff(fused_grad, plain_grad) <= 1e-4 * plain_grad.abs().max()


@needs_vector_kernel
def test_the_bf16_twin_is_the_cast_and_its_gradient_joins_the_float32_one():
    """The kernel's bf16 copy of its output is autocast's cast bit for bit; the gradients of both outputs are summed
    in the backward as autograd sums the gradient of y and that of y.to(bf16): the same values as the chain through
    the cast, to float32 rounding (the sum's order within the norm's backward)."""
    h, keep, scale, residual, norm = inputs()
    params = (h, residual, norm.weight, norm.bias)
    y, y16 = kernels.residual_norm._ResidualNorm.apply(h, residual, norm.weight, norm.bias, keep, scale, norm.eps,
                                                       True)
    assert y16.dtype == torch.bfloat16 and torch.equal(y16, y.detach().bfloat16())
    g = torch.Generator().manual_seed(4)
    dy, dy16 = torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g).bfloat16()
    got = torch.autograd.grad((y, y16), params, (dy, dy16))
    plain, _ = kernels.residual_norm._ResidualNorm.apply(h, residual, norm.weight, norm.bias, keep, scale, norm.eps,
                                                         False)
    want = torch.autograd.grad((plain, plain.bfloat16()), params, (dy, dy16))
    for a, b in zip(got[1:], want[1:]):
        assert maxdiff(a, b) <= 1e-5 * b.abs().max()
    assert (got[0] != want[0]).float().mean() < 0.01  # h's bf16 gradient: a rounding boundary crossed at most
    # only one of the two outputs read: the other's gradient is None, not zeros, and the result is that output's alone
    _, y16 = kernels.residual_norm._ResidualNorm.apply(h, residual, norm.weight, norm.bias, keep, scale, norm.eps,
                                                       True)
    plain, _ = kernels.residual_norm._ResidualNorm.apply(h, residual, norm.weight, norm.bias, keep, scale, norm.eps,
                                                         False)
    only_twin = torch.autograd.grad(y16, params, dy16)
    through_cast = torch.autograd.grad(plain.bfloat16(), params, dy16)
    assert maxdiff(only_twin[1], through_cast[1]) <= 1e-5 * through_cast[1].abs().max()


@needs_vector_kernel
def test_products_read_the_twin_and_the_step_matches_autocasts_casts(monkeypatch):
    """With the twin the model's bf16 autocast step makes no cast of a norm's output (the products read the
    kernel's copy: fewer float32-to-bf16 copies in the profile) and its loss and gradients are the step's with
    autocast's casts (the same bf16 values; float32 sums in another order)."""
    model = ours(XmodForMaskedLM, hidden_dropout_prob=0.1).train()
    twin_loss, twin_grads = mlm_step(model, True)
    kernels.use_bf16_twin(False)
    try:
        cast_loss, cast_grads = mlm_step(model, True)
    finally:
        kernels.use_bf16_twin(True)
    assert abs(twin_loss - cast_loss) <= 1e-5 * abs(cast_loss)
    assert_close_gradients(twin_grads, cast_grads, 1e-3)
    casts = {}
    for twin in (True, False):
        kernels.use_bf16_twin(twin)
        try:
            with torch.profiler.profile() as prof:
                mlm_step(model, True)
        finally:
            kernels.use_bf16_twin(True)
        casts[twin] = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    assert casts[True] < casts[False]


def test_a_tensor_changed_in_place_has_no_twin():
    y = torch.randn(4, 16)
    y._xmodlm_bf16 = (y.bfloat16(), y._version)
    assert kernels.residual_norm.bf16_twin(y) is not None
    y.add_(1)
    assert kernels.residual_norm.bf16_twin(y) is None
    assert kernels.residual_norm.bf16_twin(torch.randn(3)) is None


def test_it_steps_aside_where_it_does_not_apply():
    h, keep, scale, residual, norm = inputs()
    plain = torch.nn.LayerNorm(64)
    with torch.no_grad():  # no autograd: inference has its own paths
        assert dropout_residual_norm(h, None, residual, norm) is None
    assert dropout_residual_norm(h.float(), None, residual, norm) is None  # fp32: torch's ops
    assert dropout_residual_norm(h, None, residual.bfloat16(), norm) is None  # a bf16 residual stream
    assert dropout_residual_norm(h, torch.nn.Dropout(0.1), residual, norm) is None  # another dropout's mask
    assert dropout_residual_norm(h, None, residual, torch.nn.RMSNorm(64)) is None
    use_fused_residual_norm(False)
    try:
        assert dropout_residual_norm(h, None, residual, plain) is None
    finally:
        use_fused_residual_norm(True)


@needs_vector_kernel
def test_bad_inputs_name_the_value():
    h, keep, scale, residual, norm = inputs()
    with pytest.raises(ValueError, match="float32 residual"):
        native.residual_norm(h.detach(), keep, scale, residual.detach().bfloat16(), None, None, 1e-5)
    with pytest.raises(ValueError, match="uint8 keep mask"):
        native.residual_norm(h.detach(), keep.bool(), scale, residual.detach(), None, None, 1e-5)
    with pytest.raises(ValueError, match="float32 weight"):
        native.residual_norm(h.detach(), keep, scale, residual.detach(), norm.weight.detach()[:10], None, 1e-5)
