"""The vocabulary projection in bf16 autocast training through the own kernel on the float32 weight
(``kernels.amp.native_vocab_projection``, native.c's xm_vocab_*): against float64 math on the same bf16-rounded
operands, against today's ``autocast_linear``, thread counts, fallbacks, the model's masked-LM step."""

from __future__ import annotations

import itertools

import pytest
import torch

from switches import switch_fixture
from test_model import MIXED, batch, maxdiff
from tiny import ours

import xmodlm.kernels.amp as amp
from xmodlm.kernels import native, use_native_vocab_projection
from xmodlm.model import XmodForMaskedLM

pytestmark = pytest.mark.skipif(not native.available(), reason=f"own AMX kernels not available: {native.reason()}")

U = 2.0 ** -8  # a bf16 rounding (relative)


switch = switch_fixture(use_native_vocab_projection, lambda: amp._VOCAB["enabled"])


def operands(n, v=1024, d=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g) * 0.05
    b = torch.randn(v, generator=g) * 0.1
    dy = (torch.randn(n, v, generator=g) * 1e-3).bfloat16()
    return x, w, b, dy


def within_bf16(got, want, scale):
    """|got - want| within one bf16 rounding of want plus float32 sums' error on scale (sum of |terms|)."""
    return bool(((got.double() - want).abs() <= U * want.abs() + 1e-5 * scale).all())


@pytest.mark.parametrize("n", [303, 1, 40])
def test_against_float64(n):
    x, w, b, dy = operands(n)
    x16 = x.bfloat16()
    out = native.vocab_forward(x16, w, b)
    xd, wd, bd = x16.double(), w.bfloat16().double(), b.bfloat16().double()
    assert out.dtype == torch.bfloat16 and out.shape == (n, w.shape[0])
    assert within_bf16(out, xd @ wd.T + bd, xd.abs() @ wd.abs().T + bd.abs())
    dx, dw, db = native.vocab_backward(dy, x16, w)
    gd = dy.double()
    assert dx.dtype == torch.bfloat16 and within_bf16(dx, gd @ wd, gd.abs() @ wd.abs())
    assert dw.dtype == db.dtype == torch.float32
    # float32 sums, not rounded to bf16: float32 accuracy
    want = gd.T @ xd
    assert ((dw.double() - want).abs() <= 1e-5 * (gd.abs().T @ xd.abs()) + 1e-12).all()
    want = gd.sum(0)
    assert ((db.double() - want).abs() <= 1e-5 * gd.abs().sum(0) + 1e-12).all()


@pytest.mark.parametrize("n", [303, 1, 40])
def test_against_autocast_linear(n, switch):
    """Logits and dX as today's path up to last-bit differences, dW and db within a bf16 rounding of autocast's
    (which rounds them to bf16)."""
    x, w, b, dy = operands(n, seed=1)
    results = []
    for native_path in (False, True):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = (amp.native_vocab_projection if native_path else amp.autocast_linear)(xs, ws, bs)
        y.backward(dy)
        results.append((y, xs.grad, ws.grad, bs.grad))
    (y0, dx0, dw0, db0), (y1, dx1, dw1, db1) = results
    assert y1.dtype == torch.bfloat16 and dx1.dtype == dw1.dtype == db1.dtype == torch.float32
    assert torch.equal(y1, y0)  # oneDNN's product with the bias inside: the same bits on this machine
    assert maxdiff(dx1, dx0) <= 2 * U * dx0.abs().max().item()
    assert ((dw1 - dw0).abs() <= U * dw0.abs() + 1e-7 * dw0.abs().max()).all()
    assert ((db1 - db0).abs() <= U * db0.abs() + 1e-7 * db0.abs().max()).all()


def backward_within_float64(dy, x16, w, dx, dw, db):
    """dX within a bf16 rounding of float64 math on the same operands; dW and db float32 sums (not rounded)."""
    xd, wd, gd = x16.double(), w.bfloat16().double(), dy.double()
    assert dx.dtype == torch.bfloat16 and dx.shape == x16.shape and within_bf16(dx, gd @ wd, gd.abs() @ wd.abs())
    assert dw.dtype == db.dtype == torch.float32 and dw.shape == w.shape and db.shape == (w.shape[0],)
    assert ((dw.double() - gd.T @ xd).abs() <= 1e-5 * (gd.abs().T @ xd.abs()) + 1e-12).all()
    assert ((db.double() - gd.sum(0)).abs() <= 1e-5 * gd.abs().sum(0) + 1e-12).all()


# xm_vocab_backward's cases: fewer 32-row blocks than chunks (v = 96), a chunk of several steps with a short last one
# (v = 32 x 129: chunks of 32 or 33 blocks), row counts not multiples of 16 or 32, d of one to 24 tiles.
SHAPES = [(1, 96, 32), (17, 32 * 33, 96), (40, 32 * 129, 64), (303, 32 * 65, 256), (33, 32 * 9, 768)]


@pytest.mark.parametrize("n, v, d", SHAPES)
def test_backward_shapes(n, v, d):
    x, w, _, dy = operands(n, v, d, seed=n)
    x16 = x.bfloat16()
    backward_within_float64(dy, x16, w, *native.vocab_backward(dy, x16, w))


@pytest.mark.parametrize("flags", list(itertools.product((False, True), repeat=3)))
def test_backward_flags(flags):
    """Each gradient asked for alone or with others: the same bits as all three; None where not asked for."""
    x, w, _, dy = operands(45, v=32 * 33, d=96, seed=4)
    x16 = x.bfloat16()
    full = native.vocab_backward(dy, x16, w)
    got = native.vocab_backward(dy, x16, w, *flags)
    for asked, a, b in zip(flags, got, full):
        assert (a is not None) == asked and (not asked or torch.equal(a, b))


@pytest.mark.parametrize("n", [1, 2, 31, 32, 33, 64, 303])
def test_weight_grad_exact(n):
    """dW and db on small integers (every product and sum exact in float32, whatever the order): g's columns
    transposed into dW's tiles 32 rows at a time as they are gathered, the last pair of rows half empty where n is
    odd and the last 32 rows partial where n % 32 != 0; V a multiple of 32 but not of the backward's step (256)."""
    g = torch.Generator().manual_seed(n)
    v, d = 32 * 41, 64
    x = torch.randint(-3, 4, (n, d), generator=g).bfloat16()
    dy = torch.randint(-4, 5, (n, v), generator=g).bfloat16()
    w = torch.randn(v, d, generator=g)
    _, dw, db = native.vocab_backward(dy, x, w)
    assert torch.equal(dw, (dy.double().T @ x.double()).float())
    assert torch.equal(db, dy.double().sum(0).float())


def test_threads_same_bits():
    x, w, b, dy = operands(303, v=2048, seed=2)
    x16 = x.bfloat16()
    want = (native.vocab_forward(x16, w, b), *native.vocab_backward(dy, x16, w))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        got = (native.vocab_forward(x16, w, b), *native.vocab_backward(dy, x16, w))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, c) for a, c in zip(got, want))


@pytest.mark.parametrize("n, v, d", SHAPES)
def test_backward_threads_same_bits(n, v, d):
    x, w, _, dy = operands(n, v, d, seed=5)
    x16 = x.bfloat16()
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            runs.append(native.vocab_backward(dy, x16, w))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, c) for run in runs[1:] for a, c in zip(run, runs[0]))


def test_falls_back(switch):
    x = torch.randn(5, 64)
    for w in (torch.randn(100, 64), torch.randn(96, 48), torch.randn(96, 64).bfloat16()):
        assert not amp.native_vocab_applies(x, w, None) or w.shape[0] % 32 == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not amp.native_vocab_applies(x.requires_grad_(), torch.randn(100, 64), None)
        assert amp.native_vocab_applies(x, torch.randn(96, 64), torch.randn(96))
        use_native_vocab_projection(False)
        assert not amp.native_vocab_applies(x, torch.randn(96, 64), torch.randn(96))
    assert not amp.native_vocab_applies(x, torch.randn(96, 64), None)  # no autocast


def test_bad_inputs():
    x16, w = torch.randn(4, 64).bfloat16(), torch.randn(96, 64)
    with pytest.raises(ValueError, match="weight"):
        native.vocab_forward(x16, torch.randn(100, 64), None)
    with pytest.raises(ValueError, match="bf16 rows"):
        native.vocab_forward(x16.float(), w, None)
    with pytest.raises(ValueError, match="bias"):
        native.vocab_forward(x16, w, torch.randn(95))
    with pytest.raises(ValueError, match="gradient"):
        native.vocab_backward(torch.randn(4, 95).bfloat16(), x16, w)


def spy(monkeypatch):
    calls = []
    forward = native.vocab_forward

    def counted(*args, **kwargs):
        calls.append(args[1].shape)
        return forward(*args, **kwargs)
    monkeypatch.setattr(native, "vocab_forward", counted)
    return calls


@pytest.mark.parametrize("tied", [True, False])
def test_model_step(tied, monkeypatch, switch):
    """The masked-LM step under bf16 autocast takes the kernel, and its loss and gradients (the tied embedding's
    included) agree with the switch off to bf16 rounding."""
    calls = spy(monkeypatch)
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:6] = ids[:, 2:6]
    lang = torch.tensor(MIXED)
    runs = []
    for enabled in (False, True):
        use_native_vocab_projection(enabled)
        try:
            model = ours(XmodForMaskedLM, vocab_size=128, tie_word_embeddings=tied).train()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(ids, attention_mask=mask, lang_ids=lang, labels=labels).loss
            loss.backward()
        finally:
            use_native_vocab_projection(True)
        runs.append((loss, {k: p.grad for k, p in model.named_parameters()}))
        assert len(calls) == int(enabled)
    (loss0, grads0), (loss1, grads1) = runs
    assert calls == [torch.Size([128, 32])]
    assert abs(loss1.item() - loss0.item()) <= 1e-6 * abs(loss0.item())  # the same logits
    embedding = "roberta.embeddings.word_embeddings.weight"
    assert grads1[embedding] is not None and grads1[embedding].dtype == torch.float32
    for name, g0 in grads0.items():
        g1 = grads1[name]
        assert (g0 is None) == (g1 is None), name
        if g0 is not None:
            assert maxdiff(g1, g0) <= 4 * U * g0.abs().max().item() + 1e-7, name


def test_no_bias_and_partial_gradients():
    x, w, _, dy = operands(70, v=512, seed=3)
    x16 = x.bfloat16()
    xd, wd = x16.double(), w.bfloat16().double()
    assert within_bf16(native.vocab_forward(x16, w, None), xd @ wd.T, xd.abs() @ wd.abs().T)
    full = native.vocab_backward(dy, x16, w)
    dx, dw, db = native.vocab_backward(dy, x16, w, input_grad=False, bias_grad=False)
    assert dx is None and db is None and torch.equal(dw, full[1])
    dx, dw, db = native.vocab_backward(dy, x16, w, weight_grad=False)
    assert dw is None and torch.equal(dx, full[0]) and torch.equal(db, dy.float().sum(0))
    empty = native.vocab_backward(dy[:0], x16[:0], w)
    assert native.vocab_forward(x16[:0], w, None).shape == (0, 512)
    assert empty[0].shape == (0, 256) and not empty[1].any() and not empty[2].any()


def pairs_layout(w):
    """round_bf16(w) (v x d) as native.c's mt_pack_pairs lays it out: [d / 16][v / 32][16 row pairs][16][2]."""
    v, d = w.shape
    return w.bfloat16().view(torch.int16).view(v // 32, 16, 2, d // 16, 16).permute(3, 0, 1, 4, 2).reshape(-1)


@pytest.mark.parametrize("n, v, d", SHAPES + [(77, 32 * 20, 512)])
def test_pairs_same_bits(n, v, d):
    """The forward's W16 (``pairs``): the rounded weight in the backward's layout; the logits and statistics the same
    with it as without, and the backward reading it gives the bits of the backward packing W (dlogits given, the
    loss's gradient formed, dX alone), at 1, 2 and 3 threads."""
    x, w, b, dy = operands(n, v, d, seed=n + 7)
    x16 = x.bfloat16()
    targets = torch.randint(0, v, (n,), generator=torch.Generator().manual_seed(n))
    pairs = native.vocab_pairs(w)
    with_pairs = native.vocab_forward(x16, w, b, statistics=True, pairs=pairs)
    assert torch.equal(pairs, pairs_layout(w))
    plain = native.vocab_forward(x16, w, b, statistics=True)
    assert all(torch.equal(a, c) for a, c in zip(with_pairs, plain))
    loss = (targets, plain[1], plain[2], 1.0 / n)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            for grad, kwargs in ((dy, {}), (plain[0], {"loss": loss})):
                want = native.vocab_backward(grad, x16, w, **kwargs)
                got = native.vocab_backward(grad, x16, w, **kwargs, pairs=pairs)
                assert all(torch.equal(a, c) for a, c in zip(got, want))
            want = native.vocab_backward(dy, x16, w, True, False, False)
            assert torch.equal(native.vocab_backward(dy, x16, w, True, False, False, pairs=pairs)[0], want[0])
    finally:
        torch.set_num_threads(threads)


def test_pairs_bad_buffer():
    x, w, b, dy = operands(5, v=64, d=64)
    x16 = x.bfloat16()
    for bad in (torch.empty(64 * 64, dtype=torch.float32), torch.empty(64 * 32, dtype=torch.int16),
                torch.empty(64 * 64 + 1, dtype=torch.int16)[1:]):
        with pytest.raises(ValueError):
            native.vocab_forward(x16, w, b, pairs=bad)
        with pytest.raises(ValueError):
            native.vocab_backward(dy, x16, w, pairs=bad)


def test_projection_keeps_pairs_for_the_input_gradient(monkeypatch):
    """The autograd function asks the forward for W16 only where the input's gradient will be taken, and its
    gradients are those of the calls without it."""
    made, vocab_pairs = [], native.vocab_pairs
    monkeypatch.setattr(native, "vocab_pairs", lambda weight: made.append(1) or vocab_pairs(weight))
    x, w, b, _ = operands(40, v=512, d=64, seed=9)
    w.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            amp.native_vocab_projection(x.requires_grad_(), w, b)
        amp.native_vocab_projection(x.detach(), w, b).float().sum().backward()
        assert not made
        xg = x.detach().requires_grad_()
        out = amp.native_vocab_projection(xg, w, b)
        assert made
        dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
        out.backward(dy)
    want = native.vocab_backward(dy, x.bfloat16(), w.detach(), True, False, False)[0]
    assert torch.equal(xg.grad.bfloat16(), want)
