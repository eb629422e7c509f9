"""The masked-LM loss fused into the native vocabulary projection (``kernels.amp.use_fused_vocab_loss``; native.c's
xm_vocab_forward row statistics, xm_vocab_backward forming dlogits from the logits): the kernels' statistics and
gradient against xm_cross_entropy's and float64 math, thread counts, the loss and the gradients of x, W and b
against the separate loss and against float64, the fallbacks (other gradients of the logits, autograd.grad,
hooks, a scaled loss, per-language ranges, the switch off), the model's masked-LM step."""

from __future__ import annotations

import pytest
import torch

from switches import switch_fixture
from test_model import MIXED, batch
from tiny import ours

import xmodlm.kernels.amp as amp
from xmodlm.kernels import loss as loss_mod
from xmodlm.kernels import native
from xmodlm.model import XmodForMaskedLM

pytestmark = pytest.mark.skipif(not native.available(), reason=f"own AMX kernels not available: {native.reason()}")

U = 2.0 ** -8  # a bf16 rounding (relative)

switch = switch_fixture(amp.use_fused_vocab_loss, lambda: amp._VOCAB_LOSS["enabled"])


def operands(n, v=1024, d=64, seed=0, spread=1.0, peak=0.0):
    """x, w, b, targets; ``peak`` added to the bias of a column near the end (each row's max far above its first
    columns: the forward's sums rescaled)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g) * 0.1 * spread
    b = torch.randn(v, generator=g) * 0.1
    b[v - 5] += peak
    t = torch.randint(0, v, (n,), generator=g)
    return x, w, b, t


def reference(logits, t):
    """float64 (losses, dlogits of the mean) from the bf16 logits."""
    z = logits.double()
    top = z.max(1, keepdim=True).values
    total = (z - top).exp().sum(1, keepdim=True)
    losses = (total.log() + top).squeeze(1) - z.gather(1, t[:, None]).squeeze(1)
    grad = (z - top).exp() / total
    grad[torch.arange(len(t)), t] -= 1
    return losses, grad / len(t)


def per_row_gradient(logits, x, w, t, row_max, row_total):
    """The dlogits xm_vocab_backward forms, row by row: db of a one-row backward is its row of dlogits."""
    n = len(t)
    rows = [native.vocab_backward(logits[r:r + 1].contiguous(), x[r:r + 1].contiguous(), w, False, False, True,
                                  loss=(t[r:r + 1], row_max[r:r + 1], row_total[r:r + 1], 1.0 / n))[2]
            for r in range(n)]
    return torch.stack(rows)


@pytest.mark.parametrize("n,v,spread,peak", [(303, 4096, 1.0, 0.0), (40, 1024, 30.0, 0.0), (1, 512, 1.0, 0.0),
                                            (33, 96, 1.0, 0.0), (50, 2048, 1.0, 100.0), (20, 1024, 1.0, 70.0)])
def test_statistics_and_gradient_against_cross_entropy(n, v, spread, peak):
    """Each row's max is xm_cross_entropy's exactly, its sum within float32 rounding of float64; dlogits formed
    in the backward are xm_cross_entropy's bits but where the two sums differ in the last bit (a few values one bf16
    rounding apart), and no further from float64's rounding than they are. spread 30: logits far apart (the sums'
    terms below exp(-87) left out); peak: each row's max over 64 above its first columns (the sums rescaled)."""
    x, w, b, t = operands(n, v, spread=spread, peak=peak)
    x16 = x.bfloat16()
    logits, row_max, row_total = native.vocab_forward(x16, w, b, statistics=True)
    assert torch.equal(logits, native.vocab_forward(x16, w, b))
    z = logits.double()
    assert torch.equal(row_max, logits.float().max(1).values)
    total = (z - z.max(1, keepdim=True).values).exp().sum(1)
    assert ((row_total.double() - total).abs() <= 1e-6 * total).all()
    want_losses, want = reference(logits, t)
    old_losses, old = native.cross_entropy(logits, t, 1.0 / n)
    new_losses = row_total.log() + row_max - logits.float().gather(1, t[:, None]).squeeze(1)
    assert (new_losses.double() - want_losses).abs().max() <= 2e-6 * want_losses.abs().max() + 1e-6
    new = per_row_gradient(logits, x16, w, t, row_max, row_total)
    differ = new != old.float()
    assert int(differ.sum()) <= max(2, old.numel() // 10000)
    assert ((new - old.float()).abs()[differ] <= 2 * U * old.float().abs()[differ]).all()
    nearest = want.to(torch.bfloat16).float()
    assert int((new != nearest).sum()) <= int((old.float() != nearest).sum()) + max(2, old.numel() // 100000)


def test_statistics_thread_count():
    """The statistics' bits do not depend on the thread count (fixed column ranges, combined in range order)."""
    x, w, b, _ = operands(70, 32 * 100)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(native.vocab_forward(x.bfloat16(), w, b, statistics=True))
    finally:
        torch.set_num_threads(before)
    for got in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(got, results[0]))


def run(x, w, b, t, fused, mode="plain", ranges=None):
    """(loss, grads or captured gradients, logits) of the projection and the mean loss under bf16 autocast."""
    amp.use_fused_vocab_loss(fused)
    try:
        xs, ws, bs = (p.detach().clone().requires_grad_() for p in (x, w, b))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = amp.native_vocab_projection(xs, ws, bs)
            if mode == "hook":
                seen = []
                logits.register_hook(lambda g: seen.append(g.clone()))
            if mode == "retain":
                logits.retain_grad()
            loss = loss_mod.limited_cross_entropy(logits, t, ranges)
        if mode == "grad":
            return loss, torch.autograd.grad(loss, [logits, ws]), logits
        if mode == "other":
            (loss + logits.float().square().mean()).backward()
        elif mode == "two losses":  # a second loss on the same logits (other targets): its gradient made apart
            (loss + loss_mod.limited_cross_entropy(logits, t.flip(0), ranges)).backward()
        elif mode == "twice":  # the graph kept and run again: the stand-in claimed afresh
            loss.backward(retain_graph=True)
            loss.backward()
        elif mode == "scaled":
            (loss * 3.0).backward()
        else:
            loss.backward()
        grads = (xs.grad, ws.grad, bs.grad)
        if mode == "hook":
            grads = grads + (seen[0],)
        if mode == "retain":
            grads = grads + (logits.grad,)
        return loss, grads, logits
    finally:
        amp.use_fused_vocab_loss(True)


def close(got, want):
    """Equal to a bf16 rounding of the largest value (the separate loss's gradient may differ from the fused one
    in a few dlogits by a bf16 rounding)."""
    return (got.double() - want.double()).abs().max() <= 4 * U * want.double().abs().max() + 1e-9


def test_fused_against_separate_and_float64(switch):
    """The fused path is taken (no separate loss pass), its loss and the gradients of x, W and b agree with the
    separate loss's, and lie as close to float64 math on the same bf16 operands as they do."""
    x, w, b, t = operands(303, 4096)
    calls = []
    separate = native.cross_entropy
    try:
        native.cross_entropy = lambda *a: calls.append(1) or separate(*a)
        loss1, grads1, logits1 = run(x, w, b, t, True)
        assert not calls
        assert type(loss1.grad_fn).__name__ == "_FusedVocabCrossEntropyBackward"
        loss0, grads0, logits0 = run(x, w, b, t, False)
        assert calls
    finally:
        native.cross_entropy = separate
    assert torch.equal(logits1, logits0)
    assert abs(loss1.item() - loss0.item()) <= 1e-6 * abs(loss0.item())
    for g1, g0 in zip(grads1, grads0):
        assert g1.dtype == g0.dtype and close(g1, g0)
    # float64: dX = dlogits W16 (rounded to bf16 as the kernel's product, then cast by autograd), dW, db
    _, dl = reference(logits0, t)
    w16, x16 = w.bfloat16().double(), x.bfloat16().double()
    wants = (dl @ w16, dl.T @ x16, dl.sum(0))
    for g1, g0, want in zip(grads1, grads0, wants):
        err1, err0 = (g1.double() - want).abs().max(), (g0.double() - want).abs().max()
        assert err1 <= err0 * 1.05 + 1e-12


@pytest.mark.parametrize("mode", ["other", "grad", "hook", "retain", "scaled", "two losses", "twice"])
def test_fallbacks_agree(mode, switch):
    """Where the logits have a gradient of their own (another loss on them), autograd.grad could capture the
    stand-in, a hook or a retained gradient would see it, the loss is scaled, a second loss on the same logits, the
    graph run twice (the stand-in claimed afresh): the same results as the separate loss (the loss's gradient made
    apart where needed), bit for bit."""
    x, w, b, t = operands(57, 1024, seed=1)
    loss1, grads1, _ = run(x, w, b, t, True, mode)
    loss0, grads0, _ = run(x, w, b, t, False, mode)
    assert abs(loss1.item() - loss0.item()) <= 1e-6 * abs(loss0.item())
    assert len(grads1) == len(grads0)
    for g1, g0 in zip(grads1, grads0):  # run twice, the fused path both times: to the separate loss's roundings
        assert close(g1, g0) if mode == "twice" else torch.equal(g1, g0)


def test_ranges_and_switch_off_take_the_separate_path(switch):
    """Per-language ranges slice the logits (no statistics there): torch's loss as before; with the switch off the
    forward computes no statistics."""
    x, w, b, t = operands(20, 1024, seed=2)
    ranges = torch.tensor([[0, 512]] * 10 + [[0, 1024]] * 10)
    t = torch.where(torch.arange(20) < 10, t % 512, t)
    loss1, grads1, _ = run(x, w, b, t, True, ranges=ranges)
    loss0, grads0, _ = run(x, w, b, t, False, ranges=ranges)
    assert type(loss1.grad_fn).__name__ != "_FusedVocabCrossEntropyBackward"
    assert torch.equal(loss1, loss0) and all(torch.equal(g1, g0) for g1, g0 in zip(grads1, grads0))
    amp.use_fused_vocab_loss(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = amp.native_vocab_projection(x, w.requires_grad_(), b)
    assert amp.vocab_loss_of(logits) is None


def test_model_step(switch):
    """The masked-LM step under bf16 autocast takes the fused loss; its loss, logits and every gradient agree with
    the separate loss's to bf16 roundings."""
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:6] = ids[:, 2:6]
    lang = torch.tensor(MIXED)
    runs = []
    for fused in (True, False):
        amp.use_fused_vocab_loss(fused)
        try:
            torch.manual_seed(0)
            model = ours(XmodForMaskedLM, vocab_size=128).train()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(ids, attention_mask=mask, lang_ids=lang, labels=labels)
            out.loss.backward()
        finally:
            amp.use_fused_vocab_loss(True)
        runs.append((out, {k: p.grad for k, p in model.named_parameters()}))
    (out1, grads1), (out0, grads0) = runs
    assert type(out1.loss.grad_fn).__name__ == "_FusedVocabCrossEntropyBackward"
    assert type(out0.loss.grad_fn).__name__ != "_FusedVocabCrossEntropyBackward"
    assert torch.equal(out1.logits, out0.logits)
    assert abs(out1.loss.item() - out0.loss.item()) <= 1e-6 * abs(out0.loss.item())
    for name, g0 in grads0.items():
        g1 = grads1[name]
        assert (g0 is None) == (g1 is None), name
        if g0 is not None:
            assert close(g1, g0), name


def test_without_the_engine_query_the_loss_is_made_apart(switch, monkeypatch):
    """A torch without torch._C._will_engine_execute_node: the loss's gradient is made by its own pass (the separate
    kernel runs in the backward) and the gradients are the separate path's bits."""
    x, w, b, t = operands(64, 1024)
    monkeypatch.setattr(loss_mod, "_WILL_EXECUTE", None)
    calls = []
    separate = native.cross_entropy
    try:
        native.cross_entropy = lambda *a: calls.append(1) or separate(*a)
        loss1, grads1, _ = run(x, w, b, t, True)
    finally:
        native.cross_entropy = separate
    loss0, grads0, _ = run(x, w, b, t, False)
    assert calls and abs(loss1.item() - loss0.item()) <= 1e-6 * abs(loss0.item())
    assert all(torch.equal(a, c) for a, c in zip(grads1, grads0))
