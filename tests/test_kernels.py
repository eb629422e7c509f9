"""The CPU kernels (xmodlm.kernels) against the plain path: fused oneDNN inference and its packed
weights, the cached stacked and packed module weights, the grouped and batched module paths, the
oneDNN training linear, the bf16 autocast training linear, Dropout, dropout_attention, bf16_attention,
autocast. Each kernel path is compared with plain torch ops (``use_onednn(False)``) or the per-language
loop; the models are the tiny random ones of the parity tests (tests/test_model.py compares those with
transformers).
"""

from __future__ import annotations

import copy

import pytest
import torch

import xmodlm.kernels as kernels
import xmodlm.kernels.amp as kernel_amp
import xmodlm.kernels.attention as kernel_attention
import xmodlm.kernels.loss as kernel_loss
import xmodlm.kernels.tied as kernel_tied
from test_model import MIXED, batch, maxdiff, needs_onednn, spy
from tiny import TOL, ours, spy_weight_gradients, tiny_config
from xmodlm.model import XmodAdapter, XmodForMaskedLM, XmodModel

# the tests of oneDNN's bf16 kernels themselves; elsewhere bf16 takes torch's ops (test_kernels_without_bf16.py)
needs_bf16_onednn = pytest.mark.skipif(not kernel_amp.onednn_bf16(), reason=(
    "oneDNN has no bf16 kernels on this processor (AVX2 only): bf16 runs in torch's ops"))


def encode(model, ids, mask, langs, fused: bool):
    kernels.use_onednn(fused)
    try:
        with torch.no_grad():
            return model(ids, attention_mask=mask, lang_ids=langs).last_hidden_state
    finally:
        kernels.use_onednn(True)


@needs_onednn
def test_inference_takes_the_fused_path():
    model = ours(XmodModel)
    ids, mask = batch(lengths=[12, 9, 12, 5, 12])
    with torch.no_grad(), torch.profiler.profile() as prof:
        model(ids, attention_mask=mask, lang_ids=MIXED)
    assert "mkldnn::_linear_pointwise" in {e.key for e in prof.key_averages()}


@needs_onednn
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu", "silu", "tanh"])
def test_fused_inference_matches_plain_float32(act, monkeypatch):
    model = ours(XmodModel, hidden_act=act)
    ids, mask = batch(lengths=[12, 9, 12, 5, 12])
    calls = spy(monkeypatch, "run_grouped")
    plain = encode(model, ids, mask, MIXED, False)
    for _ in range(2):  # the second call runs the modules as grouped convolutions
        assert maxdiff(encode(model, ids, mask, MIXED, True), plain) <= TOL
    assert calls[-1]


@pytest.fixture(params=[False, True], ids=["no-AMX-paths", "AMX-paths"])
def amx_paths(request):
    """Both choices of the AMX-dependent kernels, whatever this processor is."""
    kernels.prefer_amx_paths(request.param)
    yield request.param
    kernels.prefer_amx_paths(None)


@needs_onednn
@pytest.mark.parametrize("padded", [False, True])
def test_fused_bfloat16_inference_is_as_accurate_as_plain(padded, amx_paths):
    """bf16 through the fused path (fused epilogues, fp32-score attention: hi + lo scores, or SDPA's flash
    kernel with AMX) is no further from the fp32 result than plain bf16 torch ops are (SDPA's flash
    kernel, rounded matmul outputs)."""
    model = ours(XmodModel, num_attention_heads=2)
    ids, mask = batch(b=6, t=40, lengths=[40, 31, 40, 7, 40, 22] if padded else None)
    langs = [0, 1, 2, 0, 1, 2]
    exact = encode(model, ids, mask, langs, False)
    model16 = copy.deepcopy(model).to(torch.bfloat16)
    fused, plain = encode(model16, ids, mask, langs, True), encode(model16, ids, mask, langs, False)
    real = mask.bool()  # padded positions are not compared: both paths leave them unspecified
    assert (fused.float() - exact)[real].abs().max() <= 1.5 * (plain.float() - exact)[real].abs().max() + 1e-3


@needs_onednn
def test_packed_weights_follow_weight_changes_and_train_drops_them():
    model = ours(XmodModel)
    ids, mask = batch()
    before = encode(model, ids, mask, "de_DE", True)
    assert kernels.INFERENCE_CACHE  # the big matrices were packed
    with torch.no_grad():
        model.encoder.layer[0].intermediate.dense.weight.mul_(1.5)  # in place: a new version
    model.encoder.layer[1].attention.self.key.weight = torch.nn.Parameter(torch.randn(32, 32) * 0.2)  # replaced
    after = encode(model, ids, mask, "de_DE", True)
    assert maxdiff(after, before) > 1e-3
    assert maxdiff(after, encode(model, ids, mask, "de_DE", False)) <= TOL
    model.train()
    assert not any(m in kernels.INFERENCE_CACHE for m in model.modules())


def test_a_model_with_inference_caches_deep_copies_and_saves(tmp_path):
    model = ours(XmodModel)
    ids, mask = batch()
    expected = encode(model, ids, mask, MIXED, True)
    twin = copy.deepcopy(model)
    assert torch.equal(encode(twin, ids, mask, MIXED, True), expected)
    twin.save_pretrained(tmp_path)
    assert torch.equal(encode(XmodModel.from_pretrained(tmp_path).eval(), ids, mask, MIXED, True), expected)


# Ten languages, one row each: equal segments, run as grouped convolutions once the layout repeats.
# Three rows for nine of them and two for the tenth: too many groups, so padded batched matmuls.
LAYOUTS = {"grouped": [1] * 10, "batched": [3] * 9 + [2]}


def layout_langs(name):
    return [i for i, n in enumerate(LAYOUTS[name]) for _ in range(n)]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cached_module_weights_follow_changes_and_dtype(layout):
    """The stacked (batched path) and packed (grouped path) module weights are cached across
    inference calls; in-place changes and dtype conversions must invalidate them. Compared with a
    model that never cached, each run twice so that both take the same path."""
    codes = [f"l{i}_XX" for i in range(10)]
    model = ours(XmodModel, languages=codes)
    lang = layout_langs(layout)
    ids, mask = batch(b=len(lang))

    def twice(m):
        encode(m, ids, mask, lang, True)
        return encode(m, ids, mask, lang, True)

    twice(model)
    with torch.no_grad():
        model.encoder.layer[0].output.adapter_modules["l3_XX"].dense2.bias.add_(1.0)
    fresh = copy.deepcopy(model)
    assert maxdiff(twice(model), twice(fresh)) == 0
    model.to(torch.bfloat16)
    fresh = ours(XmodModel, languages=codes)
    fresh.load_state_dict(model.state_dict())
    fresh.to(torch.bfloat16)
    assert torch.equal(twice(model), twice(fresh))


@needs_onednn
@needs_bf16_onednn
def test_grouped_modules_in_bfloat16_are_as_accurate_as_plain(monkeypatch):
    codes = [f"l{i}_XX" for i in range(8)]
    model = ours(XmodModel, languages=codes)
    ids, mask = batch(b=8, t=16)
    exact = encode(model, ids, mask, list(range(8)), False)
    model16 = copy.deepcopy(model).to(torch.bfloat16)
    calls = spy(monkeypatch, "run_grouped")
    plain = encode(model16, ids, mask, list(range(8)), False)
    encode(model16, ids, mask, list(range(8)), True)
    grouped = encode(model16, ids, mask, list(range(8)), True)
    assert calls[-2:] == [True, True]
    assert maxdiff(grouped, exact) <= 1.5 * maxdiff(plain, exact) + 1e-3


# layouts of successive inference calls (8 rows, languages from 10) and, per call and layer,
# whether the grouped path ran: packed on a layout's second call in a row, kept past a stray one
A, B = range(8), range(2, 10)
LAYOUT_SEQUENCES = {
    "alternating": ([A, B, A, B], [False] * 8),
    "stray-between": ([A, A, B, A], [False, False, True, True, False, False, True, True]),
}


@needs_onednn
@pytest.mark.parametrize("sequence", list(LAYOUT_SEQUENCES))
def test_grouped_weights_are_packed_on_a_repeated_layout_only(sequence, monkeypatch):
    layouts, expected = LAYOUT_SEQUENCES[sequence]
    model = ours(XmodModel, languages=[f"l{i}_XX" for i in range(10)])
    ids, mask = batch(b=8)
    calls = spy(monkeypatch, "run_grouped")
    for langs in layouts:
        encode(model, ids, mask, list(langs), True)
    assert calls == expected
    if not any(expected):  # layouts remembered, nothing packed
        assert not any("grouped" in kernels.INFERENCE_CACHE[layer.output] for layer in model.encoder.layer)


@needs_onednn
@pytest.mark.parametrize("form", ["oneDNN", "BLAS"])
@pytest.mark.parametrize("shape", [(3, 7, 16, 48), (2, 5, 48, 16)], ids=["wide-out", "wide-in"])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_training_linear_gradients_match_torch(shape, bias, form, autotune):
    """kernels.OneDNNLinear (fp32 training) against F.linear: output and all three gradients, with each formulation
    of the weight's gradient (forced: whatever this machine's timing would choose)."""
    kernels.use_autotune(True, min_rows=1, force=form)
    b, t, d_in, d_out = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, t, d_in, generator=g, requires_grad=True)
    w = torch.randn(d_out, d_in, generator=g, requires_grad=True)
    bb = torch.randn(d_out, generator=g, requires_grad=True) if bias else None
    upstream = torch.randn(b, t, d_out, generator=g)
    ours_out = kernels.OneDNNLinear.apply(x, w, bb)
    grads = torch.autograd.grad(ours_out, [x, w] + ([bb] if bias else []), upstream)
    want_out = torch.nn.functional.linear(x, w, bb)
    want = torch.autograd.grad(want_out, [x, w] + ([bb] if bias else []), upstream)
    torch.testing.assert_close(ours_out, want_out, rtol=1e-5, atol=1e-5)
    for got, exp in zip(grads, want):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)
    if form == "BLAS":  # in the parameter's layout: autograd keeps it as it is (no copy)
        assert grads[1].is_contiguous()


@needs_onednn
def test_the_weight_gradient_is_timed_once_per_weight_shape(autotune, monkeypatch):
    """The first call of a weight shape (from min_rows tokens) times both formulations; later calls of that shape,
    with any number of tokens, take the choice; fewer tokens than min_rows, or tuning off: oneDNN, untimed."""
    timed, ran = [], spy_weight_gradients(monkeypatch)
    monkeypatch.setattr(autotune, "_fastest", lambda candidates: timed.append(list(candidates)) or "BLAS")
    linear = kernels.linear
    g = torch.Generator().manual_seed(0)
    x, grad = torch.randn(80, 16, generator=g), torch.randn(80, 48, generator=g)
    other = torch.randn(80, 24, generator=g)
    kernels.use_autotune(True, min_rows=64)
    torch.testing.assert_close(linear.weight_gradient(grad[:40], x[:40]), grad[:40].t() @ x[:40])
    assert not timed and ran == ["oneDNN"]  # 40 tokens: under min_rows
    torch.testing.assert_close(linear.weight_gradient(grad, x), grad.t() @ x)
    linear.weight_gradient(grad[:70], x[:70])
    assert timed == [["oneDNN", "BLAS"]] and ran == ["oneDNN", "BLAS", "BLAS"]  # 70 tokens: the same shape, its choice
    linear.weight_gradient(other, x)  # another weight shape: its own choice
    assert len(timed) == 2 and sorted(k[:3] for k in autotune.choices()) == [("weight gradient", 16, 24),
                                                                          ("weight gradient", 16, 48)]
    kernels.use_autotune(False)
    linear.weight_gradient(grad, x)
    assert ran[-1] == "oneDNN"
    with pytest.raises(ValueError, match="not a set of kernel choices"):
        autotune.restore_choices({("weight gradient", 16, 48): "fastest"})


@needs_onednn
def test_fp32_training_takes_the_onednn_linear_and_frozen_weights_get_no_grad():
    model = ours().train()
    model.freeze_embeddings_and_language_adapters()
    ids, mask = batch()
    with torch.profiler.profile() as prof:
        model(ids, attention_mask=mask, lang_ids=MIXED, labels=ids).loss.backward()
    assert "mkldnn::_linear_pointwise" in {e.key for e in prof.key_averages()}
    module = model.roberta.encoder.layer[0].output.adapter_modules["en_XX"]
    assert module.dense1.weight.grad is None
    assert model.roberta.encoder.layer[0].intermediate.dense.weight.grad is not None


def test_dropout_keeps_one_minus_p_scales_exactly_and_backpropagates_its_mask():
    drop = kernels.Dropout(0.1).train()
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    rate = kept.float().mean().item()
    assert abs(rate - 0.9) < 2e-3  # 1e6 draws: the standard error is 3e-4
    scale = 65536 / (65536 - round(0.1 * 65536))
    assert torch.equal(y[kept], torch.full_like(y[kept], scale))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * scale)
    torch.manual_seed(0)
    assert torch.equal(drop(torch.ones(1000, 1000)), y.detach())  # the global generator: reproducible
    assert not torch.equal(drop(torch.ones(1000, 1000)), y.detach())  # and fresh on the next call
    for rows in (1, 2, 3, 7):  # sizes that do not fill the last 64-bit draw
        assert drop(torch.ones(rows, 5)).shape == (rows, 5)
    assert torch.equal(drop.eval()(x), x)


# (whole chunks, extra draws): under 4 draws, under one chunk, one chunk exactly and with a short second, one group
# of 8 chunks (the kernel's vector lanes) and a short chunk, one group and a chunk and a short one, two groups, and
# sizes not a multiple of 4
@pytest.mark.parametrize("chunks, extra", [(0, 3), (0, 5), (1, 0), (1, 3), (8, 1), (9, 5), (16, 0), (17, -2)])
def test_dropout_draws_are_numpys_sfc64_streams_with_or_without_the_kernel(chunks, extra, monkeypatch):
    """The keep decisions: one SFC64 stream per MASK_CHUNK draws, the first numpy's SFC64(seed) itself, each next one
    from the next three words of SeedSequence(seed); the own kernel (where built) and numpy give the same bits."""
    import numpy as np
    from xmodlm.kernels import dropout as kernel_dropout, native
    seed, threshold = 987654321, round(0.1 * 65536) - 32768
    chunk = kernel_dropout.MASK_CHUNK
    n = chunks * chunk + extra
    got = kernel_dropout.keep_draws(seed, n, threshold)
    want = []
    words = np.random.SeedSequence(seed).generate_state(3 * -(-n // chunk), np.uint64)
    for c in range(0, n, chunk):  # numpy's own seeding of each stream from its three words
        generator = np.random.SFC64(seed) if c == 0 else None
        if generator is None:
            generator = np.random.SFC64()
            state = generator.state
            state["state"]["state"] = np.array([*words[3 * (c // chunk):3 * (c // chunk) + 3], 1], dtype=np.uint64)
            generator.state = state
            generator.random_raw(12)
        count = min(chunk, n - c)
        want.append(generator.random_raw((count + 3) // 4).view(np.int16)[:count] >= threshold)
    want = torch.from_numpy(np.concatenate(want)).view(torch.uint8)
    assert got.dtype == torch.uint8 and torch.equal(got, want)
    monkeypatch.setattr(native, "available", lambda: False)  # numpy's path
    assert torch.equal(kernel_dropout.keep_draws(seed, n, threshold), want)


def test_training_attention_with_dropout_is_sdpa_math(monkeypatch):
    """kernels.dropout_attention with its dropout as identity equals SDPA (no dropout), forward and backward,
    with a padding mask; with dropout it zeroes attention probabilities."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    got = kernel_attention.dropout_attention(q, k, v, mask, torch.nn.Identity())
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(got.sum(), (q, k, v))
    for a, b in zip(grads, torch.autograd.grad(want.sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    dropped = kernel_attention.dropout_attention(q, k, v, None, kernels.Dropout(0.5).train())
    assert not torch.allclose(dropped, kernel_attention.dropout_attention(q, k, v, None, torch.nn.Identity()))
    model = ours(XmodForMaskedLM, attention_probs_dropout_prob=0.1).train()
    ids, mask2 = batch()
    calls = []
    monkeypatch.setattr(kernel_attention, "dropout_attention", lambda *a: calls.append(1) or torch.zeros_like(a[0]))
    model(ids, attention_mask=mask2, lang_ids=MIXED, labels=ids)
    assert calls  # training with attention dropout on CPU takes it


def test_training_attention_under_bf16_autocast_ignores_padding():
    """Under CPU bf16 autocast the scores are bf16: masking must use bf16's minimum (float32's
    overflowed and raised). The padded row must equal attention over its real keys only, and a
    masked-LM step with padding must train."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g).to(torch.bfloat16) for _ in range(3))  # as autocast's linears give
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = kernel_attention.dropout_attention(q, k, v, mask, torch.nn.Identity())
        alone = kernel_attention.dropout_attention(q[1:], k[1:, :, :5], v[1:, :, :5], None, torch.nn.Identity())
    assert got.dtype == torch.bfloat16
    assert torch.equal(got[1:], alone)
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)  # bf16 products
    model = ours(XmodForMaskedLM, attention_probs_dropout_prob=0.1).train()
    ids, pad_mask = batch(lengths=[12, 9, 12, 5, 12])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids, attention_mask=pad_mask, lang_ids=MIXED, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@needs_onednn
@pytest.mark.parametrize("head_dim", [64, 32], ids=["scale-power-of-two", "scale-inexact"])
def test_bf16_attention_keeps_float32_score_precision(head_dim):
    """kernels.bf16_attention (hi + lo bf16 products for the scores) against attention in float64 on the
    same bf16 inputs: its scores must be float32-grade, i.e. far closer than bfloat16 scores give and
    no further than SDPA's bf16 kernel (float32 scores) with a padding mask."""
    g = torch.Generator().manual_seed(0)
    q, k, v = ((3 * torch.randn(2, 4, 24, head_dim, generator=g)).to(torch.bfloat16) for _ in range(3))
    mask = torch.ones(2, 1, 1, 24, dtype=torch.bool)
    mask[1, ..., 17:] = False
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    before = q.clone()
    got = kernel_attention.bf16_attention(q, k, v, mask)
    assert torch.equal(q, before)  # the caller's query is not scaled in place
    strided = q.transpose(-1, -2).contiguous().transpose(-1, -2)  # not contiguous, yet reshaped as a view
    assert torch.equal(kernel_attention.bf16_attention(strided, k, v, mask), got) and torch.equal(strided, before)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores16 = (q @ k.transpose(-1, -2)) * head_dim ** -0.5  # bf16 scores, as a plain bf16 matmul gives
    rounded = torch.softmax(scores16.float().masked_fill(~mask, float("-inf")), -1).to(torch.bfloat16) @ v
    err = (got.double() - exact).abs().max()
    assert err <= 1.5 * (sdpa.double() - exact).abs().max()
    assert err < 0.5 * (rounded.double() - exact).abs().max()


@needs_onednn
def test_bf16_inference_attention_takes_sdpa_with_amx_and_hi_lo_without(amx_paths, monkeypatch):
    calls = []
    monkeypatch.setattr(kernel_attention, "bf16_attention", lambda *a: calls.append(a) or torch.zeros_like(a[0]))
    q = torch.randn(2, 2, 16, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        kernel_attention.attention(q, q, q, None, torch.nn.Dropout(0.0), training=False)
    hi_lo = not amx_paths and kernel_amp.onednn_bf16()  # without oneDNN's bf16 kernels: SDPA
    assert bool(calls) == hi_lo
    assert ("SDPA" in kernels.describe_paths()["bf16 inference attention"]) != hi_lo


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_fused_cross_entropy_matches_torch(dtype, scale):
    """kernels.scored_cross_entropy against F.cross_entropy on float32 logits (the plain path): loss to float32
    rounding, gradient to the rounding of its dtype; rows not a multiple of the slice, a scaled loss."""
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(2 * kernel_loss.SLICE_ROWS + 5, 300, generator=g)).to(dtype).requires_grad_()
    targets = torch.randint(0, 300, (logits.shape[0],), generator=g)
    before = logits.detach().clone()
    fused = kernel_loss.scored_cross_entropy(logits, targets)
    (fused * scale).backward()
    assert torch.equal(logits, before)  # the float32 work happens in the gradient's memory, never the logits'
    got, logits.grad = logits.grad, None
    plain = torch.nn.functional.cross_entropy(logits.float(), targets)
    (plain * scale).backward()
    assert got.dtype == dtype and abs(fused.item() - plain.item()) <= 1e-5 * plain.item()
    step = 1e-7 if dtype == torch.float32 else 2 ** -8 * got.abs().max().item()
    assert maxdiff(got, logits.grad) <= step
    with pytest.raises(IndexError, match="out of range"):
        kernel_loss.scored_cross_entropy(logits, torch.cat([targets[1:], torch.tensor([300])]))
    # the saved gradient is handed over as it is: a retained graph's second backward must still add it once more
    logits.grad = None
    again = kernel_loss.scored_cross_entropy(logits, targets)
    again.backward(retain_graph=True)
    once = logits.grad.clone()
    again.backward()
    assert torch.equal(logits.grad, 2 * once)
    # one slice of every row (what a GPU takes): the same loss and gradient up to float32 rounding
    whole_loss, whole_grad = kernel_loss._loss_and_gradient(logits.detach(), targets, rows=logits.shape[0])
    sliced_loss, sliced_grad = kernel_loss._loss_and_gradient(logits.detach(), targets)
    assert abs(whole_loss.item() - sliced_loss.item()) <= 1e-6 * sliced_loss.item()
    assert torch.equal(whole_grad, sliced_grad)  # each row's softmax is the same computation


def mlm_step_both_ways(model, switch, amp: bool) -> list[tuple[float, dict]]:
    """(loss, {name: gradient}) of one masked-LM step (a padded, mixed-language batch) with ``switch(True)`` and
    with ``switch(False)``; the switch is left on."""
    ids, mask = batch(lengths=[12, 9, 12, 5, 12])
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    results = []
    for on in (True, False):
        switch(on)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = model(ids, attention_mask=mask, lang_ids=MIXED, labels=labels).loss
            loss.backward()
        finally:
            switch(True)
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        model.zero_grad(set_to_none=True)
    return results


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_mlm_training_step_with_fused_cross_entropy_matches_plain(amp):
    """The whole masked-LM loss and every gradient, with the fused cross-entropy and with plain torch's."""
    results = mlm_step_both_ways(ours(XmodForMaskedLM), kernel_loss.use_fused_cross_entropy, amp)
    (fused_loss, fused_grads), (plain_loss, plain_grads) = results
    assert abs(fused_loss - plain_loss) <= 1e-5 * abs(plain_loss)
    assert fused_grads.keys() == plain_grads.keys()
    tol = 1e-5 if not amp else 2e-2  # bf16: the logits' gradient rounds to bf16 on both paths, in another order
    for name, grad in fused_grads.items():
        assert maxdiff(grad, plain_grads[name]) <= tol * max(1.0, plain_grads[name].abs().max().item()), name


def test_inference_under_autocast_computes_in_bfloat16():
    """The fused kernels step aside under autocast, so its bf16 casts still apply."""
    model = ours(XmodModel)
    ids, mask = batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = model(ids, attention_mask=mask, lang_ids=MIXED).last_hidden_state
        inner = model.encoder.layer[0].intermediate(h)
    assert inner.dtype == torch.bfloat16


# The module paths at the kernels' boundary: run_language_modules gives the per-language loop's result
# (the model's definition) or None. Per case: rows per segment, training, the path it must take.
MODULE_CASES = {
    "one-language": ((4,), False, None),
    "one-language-training": ((4,), True, None),
    "shared-module": ((2, 1, 3), False, None),
    "loop-of-kernels": ((5, 1), False, None),  # too many groups for the grouped path, too few segments to batch
    "grouped": ((1,) * 6, False, "run_grouped"),
    "batched-equal-inference": ((3,) * 9, False, "run_batched"),
    "batched-padded-training": ((2, 2, 2, 1, 2, 2, 2, 2, 2, 2), True, "run_batched"),
}
ONEDNN_CASES = {"loop-of-kernels", "grouped"}


def definition(modules, rows, h, skip, dropout):
    return dropout(torch.cat([module(part) for module, part in zip(modules, h.split(rows))])) + skip


@pytest.mark.parametrize("case", [pytest.param(c, marks=needs_onednn) if c in ONEDNN_CASES else c for c in MODULE_CASES])
def test_module_paths_give_the_per_language_loops_result(case, monkeypatch):
    rows, training, path = MODULE_CASES[case]
    torch.manual_seed(0)
    config = tiny_config()
    shared = XmodAdapter(config)
    modules = [shared if case == "shared-module" else XmodAdapter(config) for _ in rows]
    for module in modules:
        torch.nn.init.normal_(module.dense1.bias), torch.nn.init.normal_(module.dense2.bias)
        module.train(training)
    dropout = kernels.Dropout(0.1).train(training)
    h = torch.randn(sum(rows), 5, config.hidden_size)
    skip = h + torch.randn_like(h)
    calls = spy(monkeypatch, path) if path else []
    owner = torch.nn.Module()
    with torch.set_grad_enabled(training):
        for _ in range(2):  # the grouped path packs on a layout's second call
            torch.manual_seed(1)
            got = kernels.run_language_modules(rows, modules, h, skip, dropout, training, owner)
            torch.manual_seed(1)
            want = definition(modules, rows, h, skip, dropout)
            assert got is not None
            assert maxdiff(got, want) <= TOL
    assert not path or calls[-1]


def test_module_paths_leave_autograd_over_few_languages_to_the_loop():
    config = tiny_config()
    modules = [XmodAdapter(config) for _ in range(3)]
    h = torch.randn(6, 5, config.hidden_size)
    with torch.enable_grad():
        assert kernels.run_language_modules((2, 3, 1), modules, h, h, kernels.Dropout(0.0), False, torch.nn.Module()) is None


def test_range_cross_entropy_is_the_loss_of_a_model_with_only_those_rows():
    from xmodlm.kernels.loss import limited_cross_entropy, mask_beyond
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 12, generator=g)
    ranges = torch.tensor([[0, 5]] * 3 + [[5, 12]] * 4)
    targets = torch.tensor([1, 4, 0, 5, 11, 7, 2])  # the last lies outside its range [5, 12): scored over all rows
    want = (torch.nn.functional.cross_entropy(logits[:3, :5], targets[:3], reduction="sum")
            + torch.nn.functional.cross_entropy(logits[3:6, 5:], targets[3:6] - 5, reduction="sum")
            + torch.nn.functional.cross_entropy(logits[6:], targets[6:], reduction="sum")) / 7
    assert torch.allclose(limited_cross_entropy(logits, targets, ranges), want)
    one = torch.tensor([[5, 12]] * 6)  # one range, every target inside: bit for bit the sliced model's loss
    assert torch.equal(limited_cross_entropy(logits[:6], targets[:6].clamp(min=5), one),
                       torch.nn.functional.cross_entropy(logits[:6, 5:], targets[:6].clamp(min=5) - 5))
    masked = mask_beyond(logits, ranges, targets)
    assert torch.equal(torch.nn.functional.cross_entropy(masked, targets, reduction="sum") / 7,
                       torch.nn.functional.cross_entropy(masked, targets)) and torch.isfinite(masked[6]).all()
    assert (masked[:3, 5:] == float("-inf")).all() and (masked[3:6, :5] == float("-inf")).all()
    assert torch.allclose(torch.nn.functional.cross_entropy(masked, targets), want)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_tied_lookup_gradient_joins_the_decoders_as_rows(amp, tie, monkeypatch):
    """Every gradient of a masked-LM step (padding in the batch) with the tied lookup's rows added into the
    decoder's gradient and with torch's dense lookup gradient: the same float32 sums in another order. Untied,
    the rows path does not apply and the gradients are the plain ones bit for bit; always dense."""
    added = []
    original = kernel_tied.add_rows
    monkeypatch.setattr(kernel_tied, "add_rows", lambda *a: (added.append(1), original(*a))[1])
    results = mlm_step_both_ways(ours(XmodForMaskedLM, tie_word_embeddings=tie), kernels.use_tied_row_gradient, amp)
    losses, grads = [loss for loss, _ in results], [g for _, g in results]
    assert added == ([1] if tie else []) and losses[0] == losses[1]
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert grad.layout == torch.strided
        tol = 1e-6 if tie else 0.0
        assert maxdiff(grad, grads[1][name]) <= tol * max(1.0, grads[1][name].abs().max().item()), name
    if not tie:  # the padding row (id 1, in the batch) gets no gradient from the lookup
        assert not grads[0]["roberta.embeddings.word_embeddings.weight"][1].any()


def test_tied_lookup_without_a_decoder_gradient_stays_dense():
    """A frozen decoder, or a backward that never reaches the decoder, leaves the lookup's own dense gradient."""
    model = ours(XmodForMaskedLM)
    ids, mask = batch()
    out = model.roberta(ids, attention_mask=mask, lang_ids=MIXED).last_hidden_state
    out.float().pow(2).mean().backward()
    word = model.roberta.embeddings.word_embeddings.weight
    reference = ours(XmodForMaskedLM)
    kernels.use_tied_row_gradient(False)
    try:
        reference.roberta(ids, attention_mask=mask, lang_ids=MIXED).last_hidden_state.float().pow(2).mean().backward()
    finally:
        kernels.use_tied_row_gradient(True)
    assert word.grad.layout == torch.strided
    assert torch.equal(word.grad, reference.roberta.embeddings.word_embeddings.weight.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_one_pass_dropout_gives_the_two_multiplications_numbers(dtype):
    """Dropout's mask and scale in one pass (forward and backward) against torch's x * keep, then * scale: the
    same mask (same seed), bit for bit the same output and gradient; under autocast too."""
    drop = kernels.Dropout(0.1).train()
    x = torch.randn(6, 40, 33, dtype=dtype, requires_grad=True)
    grad = torch.randn(6, 40, 33, dtype=dtype)
    results = []
    for one_pass in (True, False):
        kernels.use_one_pass_dropout(one_pass)
        try:
            torch.manual_seed(5)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                y = drop(x)
            y.backward(grad)
        finally:
            kernels.use_one_pass_dropout(True)
        results.append((y.detach(), x.grad))
        x.grad = None
    (y1, g1), (y0, g0) = results
    assert y1.dtype == y0.dtype == dtype and torch.equal(y1, y0) and torch.equal(g1, g0)
    assert 0.85 < float((y1 != 0).float().mean()) < 0.95


def test_tied_lookup_of_a_bf16_model_keeps_torchs_gradient(monkeypatch):
    """A bf16 matrix keeps torch's lookup gradient (it sums repeated tokens in float32; index_add_ would not)."""
    model = ours(XmodForMaskedLM).to(torch.bfloat16)
    ids, mask = batch()
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    monkeypatch.setattr(kernel_tied, "add_rows", lambda *a: pytest.fail("rows added into a bf16 gradient"))
    model(ids, attention_mask=mask, lang_ids=MIXED, labels=labels).loss.backward()
    assert model.roberta.embeddings.word_embeddings.weight.grad.dtype == torch.bfloat16


@pytest.fixture
def autotune(monkeypatch):
    """Tuning from one row and row blocks of 64 (the tiny models' products are small), restored after the test."""
    monkeypatch.setattr(kernels.linear, "ROW_BLOCK", 64)
    yield kernels.tune
    kernels.use_autotune(True, min_rows=256)


@needs_onednn
@pytest.mark.parametrize("force", ["fused", "row blocks", "transposed", "separate activation", "AMX kernel",
                                   "AMX kernel, rows split"])
def test_every_tuned_formulation_is_as_accurate_as_plain_bf16(force, autotune):
    """Each formulation the timing can pick (forced here, so that all are checked whatever this
    machine's timings say) keeps the bf16 model as close to fp32 as plain bf16 torch ops."""
    if force.startswith("AMX kernel") and not kernels.native.available():
        pytest.skip(f"the AMX kernel is not available here: {kernels.native.reason()}")
    model = ours(XmodModel, num_attention_heads=2)
    ids, mask = batch(b=6, t=40)
    langs = [0, 1, 2, 0, 1, 2]
    exact = encode(model, ids, mask, langs, False)
    model16 = copy.deepcopy(model).to(torch.bfloat16)
    plain = encode(model16, ids, mask, langs, False)
    kernels.use_autotune(True, min_rows=1, force=force)
    tuned = encode(model16, ids, mask, langs, True)
    assert (tuned.float() - exact).abs().max() <= 1.5 * (plain.float() - exact).abs().max() + 1e-3


@needs_onednn
@pytest.mark.parametrize("force", ["fused", "row blocks", "separate activation", "AMX kernel"])
def test_tuned_formulations_under_autocast_are_as_accurate_as_plain_autocast(force, autotune):
    """Under bf16 autocast the linears are tuned too (a residual one on its bf16 product alone, the fp32
    residual added after it)."""
    if force == "AMX kernel" and not kernels.native.available():
        pytest.skip(f"the AMX kernel is not available here: {kernels.native.reason()}")
    model = ours(XmodModel, num_attention_heads=2)
    ids, mask = batch(b=6, t=40)
    langs = [0, 1, 2, 0, 1, 2]
    exact = encode(model, ids, mask, langs, False)
    plain = encode_autocast(model, ids, mask, langs, False)
    kernels.use_autotune(True, min_rows=1, force=force)
    tuned = encode_autocast(model, ids, mask, langs, True)
    assert (tuned - exact).abs().max() <= 1.5 * (plain - exact).abs().max() + 1e-3


@needs_onednn
@needs_bf16_onednn
def test_the_transposed_product_computes_the_residual_linear():
    torch.manual_seed(0)
    x, residual = torch.randn(300, 48), torch.randn(300, 40)
    layer = torch.nn.Linear(48, 40)
    expected = layer(x) + residual
    with torch.no_grad():
        for bias in (layer.bias, None):
            got = kernels.linear._transposed(x.bfloat16(), layer.weight.bfloat16(),
                                             None if bias is None else bias.bfloat16(), residual.bfloat16())
            want = expected if bias is not None else expected - layer.bias
            assert got.shape == (300, 40) and got.is_contiguous()
            assert maxdiff(got, want) <= 0.05 * want.abs().max()


@needs_onednn
@needs_bf16_onednn
@pytest.mark.parametrize("act,residual", [(None, True), ("gelu", False), (None, False)])
def test_row_blocks_compute_the_fused_product(act, residual, monkeypatch):
    """The product in blocks of rows, the last one ragged, on a 3-d input: the fused call's result."""
    monkeypatch.setattr(kernels.linear, "ROW_BLOCK", 64)
    torch.manual_seed(0)
    x, other = torch.randn(3, 100, 48).bfloat16(), torch.randn(3, 100, 40).bfloat16() if residual else None
    layer = torch.nn.Linear(48, 40).bfloat16()
    with torch.no_grad():
        packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight)
        whole = kernels.linear._fused(x, packed, layer.bias, act, other)
        blocks = kernels.linear._in_row_blocks(x, packed, layer.bias, act, other)
    assert blocks.shape == whole.shape == (3, 100, 40) and blocks.is_contiguous()
    assert maxdiff(blocks, whole) <= 0.01 * whole.float().abs().max()


@needs_onednn
@needs_bf16_onednn
def test_autotune_times_a_shape_once_and_keeps_its_choice(autotune, monkeypatch):
    model = ours(XmodModel).to(torch.bfloat16)
    ids, mask = batch(b=6, t=40)
    timed = []
    original = autotune._fastest
    monkeypatch.setattr(autotune, "_fastest", lambda candidates: timed.append(list(candidates)) or original(candidates))
    kernels.use_autotune(True, min_rows=1)
    first = encode(model, ids, mask, MIXED[:1] * 6, True)
    choices = autotune.choices()
    # every product offers row blocks (240 rows, blocks of 64), the residual linears the transposed
    # product, the activated one a separate activation; all of them the AMX kernel where it is built
    # (the own kernel with the rows split first, as the default)
    lead, amx = (["AMX kernel, rows split"], ["AMX kernel"]) if kernels.native.available() else ([], [])
    assert lead + ["fused", "row blocks"] + amx in timed
    assert lead + ["fused", "row blocks", "transposed"] + amx in timed
    assert lead + ["fused", "row blocks", "separate activation"] + amx in timed
    assert len(timed) == len(choices) and set(choices.values()) <= set(autotune.NAMES)
    assert torch.equal(encode(model, ids, mask, MIXED[:1] * 6, True), first)  # the same choices, the same bits
    assert len(timed) == len(choices)  # nothing timed again
    kernels.use_autotune(False)
    ids2, mask2 = batch(b=12, t=40)  # another rows bucket: would be timed if tuning were on
    encode(model, ids2, mask2, MIXED[:1] * 12, True)
    assert len(timed) == len(choices) and autotune.choices() == choices  # kept while off, nothing new timed
    kernels.use_autotune(True, min_rows=2)
    assert not autotune.choices()  # another setting: forgotten
    with pytest.raises(ValueError, match="force='fastest'"):
        kernels.use_autotune(True, force="fastest")
    with pytest.raises(ValueError, match="min_rows=0"):
        kernels.use_autotune(True, min_rows=0)


@needs_onednn
@needs_bf16_onednn
@pytest.mark.parametrize("force,kept", [("fused", {"onednn"}), ("transposed", set()), ("AMX kernel", {"amx"}),
                                        ("AMX kernel, rows split", {"amx"})])
def test_a_tuned_linear_keeps_only_the_packed_copy_its_formulation_reads(force, kept, autotune):
    if force.startswith("AMX kernel") and not kernels.native.available():
        pytest.skip(f"the AMX kernel is not available here: {kernels.native.reason()}")
    model = ours(XmodModel, hidden_size=64, intermediate_size=128, num_attention_heads=2).to(torch.bfloat16)
    ids, mask = batch(b=6, t=40)
    kernels.use_autotune(True, min_rows=1, force=force)
    encode(model, ids, mask, MIXED[:1] * 6, True)
    dense = model.encoder.layer[0].output.dense  # a residual linear: every formulation is on offer
    assert {layout for (_, layout) in kernels.INFERENCE_CACHE.get(dense, {})} == kept


def test_autotune_buckets_rows_by_powers_of_two():
    assert [kernels.tune.bucket(n) for n in (1, 3, 256, 300, 380, 1024, 1500)] == [1, 4, 256, 256, 512, 1024, 2048]


def encode_autocast(model, ids, mask, langs, fused: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return encode(model, ids, mask, langs, fused)


@needs_onednn
@needs_bf16_onednn
def test_bf16_autocast_inference_takes_the_fused_kernels_as_accurately(monkeypatch):
    """Under CPU bf16 autocast (embed and retrieval's --precision bf16), inference runs the fused
    kernels on bf16 copies of the weights, packed once, instead of torch's ops with autocast's casts at
    every call; the residual stream stays float32 as autocast keeps it, and the result is no further
    from fp32 than plain autocast's. An fp32 call afterwards gets fp32 weights back."""
    model = ours(XmodModel, num_attention_heads=2)
    ids, mask = batch(b=6, t=40, lengths=[40, 31, 40, 7, 40, 22])
    langs = [0, 1, 2, 0, 1, 2]
    real = mask.bool()
    exact = encode(model, ids, mask, langs, False)
    plain = encode_autocast(model, ids, mask, langs, False)
    calls = spy(monkeypatch, "run_grouped")
    with torch.profiler.profile() as prof:
        for _ in range(2):  # the second call runs the modules as grouped convolutions
            fused = encode_autocast(model, ids, mask, langs, True)
            assert fused.dtype == torch.float32  # the last LayerNorm's, as under plain autocast
            assert (fused - exact)[real].abs().max() <= 1.5 * (plain - exact)[real].abs().max() + 1e-3
    assert calls[-1]
    ops = {e.key: e.count for e in prof.key_averages()}
    assert "mkldnn::_linear_pointwise" in ops and ops.get("aten::addmm") == 2  # only the pooler's, once a call
    dense = model.encoder.layer[0].intermediate.dense
    assert kernels.INFERENCE_CACHE[dense][(torch.bfloat16, "onednn")][1].dtype == torch.bfloat16 and dense.weight.dtype == torch.float32
    assert maxdiff(encode(model, ids, mask, langs, True)[real], exact[real]) <= TOL  # fp32 again



@needs_bf16_onednn
@pytest.mark.parametrize("frozen", [False, True], ids=["all-trained", "paper-fine-tuning-frozen"])
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_mlm_training_step_with_the_bias_in_the_product_matches_autocast(amp, frozen, monkeypatch):
    """The loss and every gradient of a masked-LM step with the bf16 autocast linears' bias added inside oneDNN's
    product and with autocast's F.linear (addmm): one rounding of the same float32 sums on both paths; also with
    the embeddings (the tied decoder) and the language modules frozen. fp32 training does not take the path
    (bit for bit the same step)."""
    calls = []
    original = kernel_amp._BiasInProduct.apply
    monkeypatch.setattr(kernel_amp._BiasInProduct, "apply", lambda *a: (calls.append(1), original(*a))[1])
    model = ours(XmodForMaskedLM)
    if frozen:
        model.freeze_embeddings_and_language_adapters()
    results = mlm_step_both_ways(model, kernels.use_autocast_linear, amp)
    (on_loss, on_grads), (off_loss, off_grads) = results
    # in the step with the switch on, every linear once: 4 a layer, 2 per language module in a layer (few
    # languages: the per-language loop) and the masked-LM head's 2
    layers = model.config.num_hidden_layers
    assert len(calls) == ((4 + 2 * len(set(MIXED))) * layers + 2 if amp else 0)
    assert abs(on_loss - off_loss) <= 1e-6 * abs(off_loss)
    assert on_grads.keys() == off_grads.keys()
    tol = 0.0 if not amp else 1e-2  # bf16: within a rounding of bf16 (the same sums: equal in practice)
    for name, grad in on_grads.items():
        assert grad.dtype == off_grads[name].dtype and grad.is_contiguous(), name
        assert maxdiff(grad, off_grads[name]) <= tol * max(1.0, off_grads[name].abs().max().item()), name


@needs_bf16_onednn
@pytest.mark.parametrize("shape", [(7, 12), (3, 5, 12)], ids=["2d", "3d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32-input", "bf16-input"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_autocast_linear_gives_autocasts_output_and_gradients(shape, dtype, bias):
    """One linear under bf16 autocast, its input float32 (a LayerNorm's output) or bf16 (an activation's): the
    output in bf16 and the gradients of input, weight and bias in their own dtypes, as autocast's F.linear."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 9, bias=bias)
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    grad = torch.randn(*shape[:-1], 9, dtype=torch.bfloat16)
    results = []
    for on in (True, False):
        kernels.use_autocast_linear(on)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = kernels.linear.linear((lin,), x)
            y.backward(grad)
        finally:
            kernels.use_autocast_linear(True)
        results.append((y.detach(), x.grad, lin.weight.grad, lin.bias.grad if bias else None))
        x.grad = lin.weight.grad = None
        if bias:
            lin.bias.grad = None
    for got, want in zip(*results):
        if want is None:
            assert got is None
            continue
        assert got.dtype == want.dtype and got.shape == want.shape
        assert maxdiff(got, want) <= 1e-2 * max(1.0, want.abs().max().item())
    assert results[0][0].dtype == torch.bfloat16 and results[0][2].dtype == torch.float32


def test_autocast_linear_steps_aside_without_autocast_or_autograd(monkeypatch):
    """fp32 training keeps OneDNNLinear (or F.linear), and inference under autocast keeps autocast's own linear."""
    monkeypatch.setattr(kernel_amp._BiasInProduct, "apply", lambda *a: pytest.fail("bias-in-product path taken"))
    lin = torch.nn.Linear(12, 9)
    x = torch.randn(4, 12, requires_grad=True)
    kernels.linear.linear((lin,), x).sum().backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.linear.linear((lin,), x).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype,training", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)])
def test_a_linear_with_a_norm_is_the_norm_of_the_linear(dtype, training):
    """``linear(..., norm=)`` is ``norm(linear(...))``, in inference (fused paths) and in training (gradients
    flow to the norm's parameters as through the two calls)."""
    torch.manual_seed(0)
    dense, norm = torch.nn.Linear(32, 48).to(dtype), kernels.LayerNorm(48).to(dtype)
    with torch.no_grad():
        norm.weight.normal_(1, 0.2), norm.bias.normal_(0, 0.2)
    dense.train(training), norm.train(training)
    x, residual = torch.randn(5, 7, 32, dtype=dtype), torch.randn(5, 7, 48, dtype=dtype)
    with torch.set_grad_enabled(training):
        got = kernels.linear.linear((dense,), x, act="gelu", residual=residual, norm=norm)
        want = norm(kernels.linear.linear((dense,), x, act="gelu", residual=residual))
    assert torch.equal(got, want)
    if training:
        got.square().sum().backward()
        first = norm.weight.grad.clone()
        norm.weight.grad = None
        want.square().sum().backward()
        assert torch.equal(norm.weight.grad, first)
