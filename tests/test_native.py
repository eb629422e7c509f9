"""The own kernels (xmodlm.kernels.native, kernels/native.c): its products against a float32 reference, its
GELU against float64, its input checks, the build's fallback and cache, and the model's bf16 inference
through it (the language modules' segments and the tuned linears) against fp32. Where this machine cannot
build or run it (no AMX, no C compiler) the tests that run it skip and say why."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import xmodlm.kernels as kernels
from xmodlm.kernels import native
from test_model import batch, spy
from tiny import ours
from xmodlm.model import XmodModel

needs_amx_kernel = pytest.mark.skipif(not native.available(), reason=f"AMX kernel not available: {native.reason()}")
needs_vector_kernel = pytest.mark.skipif(not native.vector_available(),
                                         reason=f"own vector kernels not available: {native.vector_reason()}")


def reference(x, rows, weights, biases, act=None, residual=None):
    y = torch.cat([part.float() @ w.float().t() + (0 if b is None else b)
                   for part, w, b in zip(x.split(list(rows)), weights, biases)])
    if act == "gelu":
        y = torch.nn.functional.gelu(y)
    return y if residual is None else y + residual.float()


def within_one_rounding(got, want):
    """Each bf16 value within one bf16 step (2^-8 relative) of the float32 value it rounds."""
    return bool(((got.float() - want).abs() <= 2 ** -8 * want.abs() + 1e-6).all())


@needs_amx_kernel
@pytest.mark.parametrize("rows,k,n,act,residual,bias", [
    ((100,), 64, 96, None, True, True),  # a block of 4 rows after three full ones
    ((128, 37, 0, 5, 256), 768, 384, "gelu", False, True),  # the modules' shape; an empty segment
    ((1024,), 3072, 768, None, True, True),  # the feed-forward output at xmod-base
    ((33, 1), 32, 32, "gelu", True, False),
])
def test_segments_compute_each_segments_product_rounded_once(rows, k, n, act, residual, bias):
    torch.manual_seed(0)
    x = torch.randn(sum(rows), k).bfloat16()
    weights = [(torch.randn(n, k) / math.sqrt(k)).bfloat16() for _ in rows]
    biases = [torch.randn(n) if bias else None for _ in rows]
    other = torch.randn(sum(rows), n).bfloat16() if residual else None
    packed = [native.pack(w) for w in weights]
    got = native.segments_linear(x, rows, packed, biases, n, act, other)
    assert got.dtype == torch.bfloat16 and got.shape == (sum(rows), n)
    assert within_one_rounding(got, reference(x, rows, weights, biases, act, other))
    # the threads sharing the rows instead of the columns: the same sums, the same bits
    assert torch.equal(native.segments_linear(x, rows, packed, biases, n, act, other, split_rows=True), got)


@needs_amx_kernel
@pytest.mark.parametrize("rows,residual", [((100,), True), ((128, 37, 0, 5, 256), True), ((33, 1), False)])
@pytest.mark.parametrize("split_rows", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_a_norm_in_the_call_is_the_layer_norm_of_its_result(rows, residual, split_rows, affine):
    """LayerNorm inside the product's call (rows split: each row as its thread finishes it; columns split: after)
    gives the bits of the product followed by the LayerNorm kernel, over padded blocks and several segments."""
    torch.manual_seed(0)
    k, n = 64, 96
    x = torch.randn(sum(rows), k).bfloat16()
    packed = [native.pack((torch.randn(n, k) / 8).bfloat16()) for _ in rows]
    biases = [torch.randn(n) for _ in rows]
    other = torch.randn(sum(rows), n).bfloat16() if residual else None
    weight, bias = (None, None)
    if affine:
        weight, bias = (torch.randn(n) * 0.2 + 1).bfloat16(), (torch.randn(n) * 0.2).bfloat16()
    plain = native.segments_linear(x, rows, packed, biases, n, "gelu", other, split_rows)
    got = native.segments_linear(x, rows, packed, biases, n, "gelu", other, split_rows, (weight, bias, 1e-5))
    assert torch.equal(got, native.layer_norm(plain, weight, bias, 1e-5))
    with pytest.raises(ValueError, match=r"bf16 weight of shape \(96,\), got torch.float32"):
        native.segments_linear(x, rows, packed, biases, n, None, None, split_rows, (torch.ones(n), None, 1e-5))


@needs_amx_kernel
@pytest.mark.parametrize("rows,residual,norm", [((128, 37, 0, 5, 256), True, True), ((100,), False, False),
                                               ((33, 1), True, False)])
def test_the_modules_call_is_its_two_products(rows, residual, norm):
    """Both products of the language modules in one call: the bits of the two calls with the rows split (and of
    the LayerNorm after), over padded blocks, an empty segment and several segments."""
    torch.manual_seed(0)
    d, r = 96, 64
    x = torch.randn(sum(rows), d).bfloat16()
    first = [(native.pack((torch.randn(r, d) / 8).bfloat16()), torch.randn(r)) for _ in rows]
    second = [(native.pack((torch.randn(d, r) / 8).bfloat16()), None if i % 2 else torch.randn(d))
              for i in range(len(rows))]
    other = torch.randn(sum(rows), d).bfloat16() if residual else None
    args = ((torch.randn(d) * 0.2 + 1).bfloat16(), (torch.randn(d) * 0.2).bfloat16(), 1e-5) if norm else None
    inner = native.segments_linear(x, rows, [w for w, _ in first], [b for _, b in first], r, "gelu", split_rows=True)
    want = native.segments_linear(inner, rows, [w for w, _ in second], [b for _, b in second], d, None, other,
                                  split_rows=True, norm=args)
    assert torch.equal(native.modules(x, rows, first, second, other, args), want)
    with pytest.raises(ValueError, match=r"segments of \[100\] rows with 1 and 2 weights"):
        native.modules(x[:100], (100,), first[:1], second[:1] * 2)


@needs_amx_kernel
def test_pack_lays_the_weight_out_in_tiles():
    """tiles[n / 16][k / 32][input pair][output][2] = W[16 nt + output][32 kt + 2 pair + i]."""
    n, k = 96, 128
    w = torch.arange(n * k, dtype=torch.float32).remainder(251).view(n, k).bfloat16()
    want = w.view(n // 16, 16, k // 32, 16, 2).permute(0, 2, 3, 1, 4).reshape(-1)
    assert torch.equal(native.pack(w), want)


@needs_amx_kernel
def test_segments_read_strided_rows():
    """Rows with a stride (a slice of a wider tensor) are read where they are."""
    torch.manual_seed(0)
    wide = torch.randn(70, 96).bfloat16()
    x, weight = wide[:, 32:96], (torch.randn(64, 64) / 8).bfloat16()
    got = native.segments_linear(x, (70,), [native.pack(weight)], [None], 64)
    assert within_one_rounding(got, reference(x, (70,), [weight], [None]))


@needs_amx_kernel
def test_gelu_is_accurate_to_bf16_rounding_over_the_whole_range():
    """GELU(erf) of the accumulator against float64 (1 - erf computed as erfc, accurate in the far negative
    tail, where torch's float32 GELU itself loses its digits), far into both tails: from |x| of about 13 the tail is
    a float32 denormal, which the product kernels flush to zero (results below 1e-37 in magnitude, or 1 exactly)."""
    x = torch.cat([torch.linspace(-40, 40, 32 * 2048), torch.linspace(-20, -12, 32 * 1024)]).bfloat16().view(-1, 32)
    got = native.segments_linear(x, (x.shape[0],), [native.pack(torch.eye(32).bfloat16())], [None], 32, "gelu")
    exact = x.double() * 0.5 * torch.special.erfc(-x.double() / math.sqrt(2))
    assert bool(((got.double() - exact).abs() <= 2 ** -8 * exact.abs() + 1e-37).all())


@needs_amx_kernel
def test_bad_inputs_name_the_value():
    x, packed = torch.randn(32, 32).bfloat16(), native.pack(torch.randn(32, 32).bfloat16())
    with pytest.raises(ValueError, match="torch.float32"):
        native.segments_linear(x.float(), (32,), [packed], [None], 32)
    with pytest.raises(ValueError, match=r"residual of shape \(32, 32\)"):
        native.segments_linear(x, (32,), [packed], [None], 32, residual=torch.randn(32, 16).bfloat16())
    with pytest.raises(ValueError, match=r"segments of \[30\] rows for an input of 32"):
        native.segments_linear(x, (30,), [packed], [None], 32)
    with pytest.raises(ValueError, match="act='relu'"):
        native.segments_linear(x, (32,), [packed], [None], 32, act="relu")


def test_shapes_outside_whole_tiles_are_not_taken():
    assert native.fits(768, 3072) and native.fits(32, 32)
    assert not native.fits(100, 64) and not native.fits(64, 48) and not native.fits(0, 32)


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """The kernel built (or not) from scratch into an empty cache folder; the state restored after."""
    monkeypatch.setenv("XMODLM_KERNEL_CACHE", str(tmp_path))
    for key in ("lib", "tried", "reason", "tiles", "tiles_reason"):
        monkeypatch.setitem(native._STATE, key, native._STATE[key])
    native._STATE.update(lib=None, tried=False)
    return tmp_path


def test_a_failed_build_leaves_the_kernels_off_and_says_why(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_build / "no-such-compiler"))
    assert not native.available() and not native.vector_available()
    assert native.reason() and native.vector_reason()  # processor, platform or the missing compiler
    if native.NEEDED <= (kernels.cpu.cpu_flags() or frozenset()):
        assert "build or load failed" in native.vector_reason() and "no-such-compiler" in native.vector_reason()
        if kernels.cpu.amx_bf16():
            assert "build or load failed" in native.reason()
    assert not list(fresh_build.glob("*.so*"))  # nothing half-written left behind


@needs_amx_kernel
def test_the_build_is_cached_under_the_source_hash(fresh_build):
    assert native.available(), native.reason()
    built = list(fresh_build.iterdir())
    assert len(built) == 1 and built[0].name.startswith("native-") and built[0].suffix == ".so"
    native._STATE.update(lib=None, tried=False)
    stamp = built[0].stat().st_mtime_ns
    assert native.available() and built[0].stat().st_mtime_ns == stamp  # loaded again, not rebuilt


def test_switched_off_the_kernels_are_not_used(monkeypatch):
    kernels.use_amx_kernels(False)
    try:
        assert not native.available() and not native.vector_available()
    finally:
        kernels.use_amx_kernels(True)


def wide_model():
    """A tiny model whose products come in whole tiles of 32 (width 64, modules of 32, feed-forward 128)."""
    return ours(XmodModel, hidden_size=64, intermediate_size=128, num_attention_heads=2, adapter_reduction_factor=2)


@needs_amx_kernel
@pytest.mark.parametrize("split", ["AMX kernel", "AMX kernel, rows split"])
@pytest.mark.parametrize("autocast", [False, True], ids=["bf16-weights", "bf16-autocast"])
def test_model_inference_through_the_kernel_is_as_accurate_as_plain_bf16(autocast, split, monkeypatch):
    """The modules' segments (every layer, mixed languages, padded rows, both products in one call), the
    attention and, forced, every
    tuned linear through the own kernels (rows split: the post-norms inside the products' calls): no further
    from the fp32 model than torch's plain bf16 ops."""
    model = wide_model()
    ids, mask = batch(b=6, t=40, lengths=[40, 31, 40, 7, 40, 22])
    langs, real = [0, 1, 2, 0, 1, 2], mask.bool()
    with torch.no_grad():
        exact = model(ids, attention_mask=mask, lang_ids=langs).last_hidden_state
    low = model if autocast else copy.deepcopy(model).to(torch.bfloat16)

    def run(fast: bool):
        kernels.use_onednn(fast)
        kernels.use_autotune(True, min_rows=1, force=split if fast else None)
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return low(ids, attention_mask=mask, lang_ids=langs).last_hidden_state.float()
        finally:
            kernels.use_onednn(True)
            kernels.use_autotune(True, min_rows=256)
    plain = run(False)
    calls, attended, normed, moduled = [], [], [], []
    original, original_attention, original_norm = native.segments_linear, native.attention, native.layer_norm
    original_modules = native.modules
    monkeypatch.setattr(native, "modules", lambda *a: moduled.append(len(a[1])) or original_modules(*a))
    monkeypatch.setattr(native, "segments_linear", lambda *a, **kw: calls.append(len(a[1])) or original(*a, **kw))
    monkeypatch.setattr(native, "attention", lambda *a: attended.append(1) or original_attention(*a))
    monkeypatch.setattr(native, "layer_norm", lambda *a: normed.append(1) or original_norm(*a))
    fast = run(True)
    assert len(attended) == 2  # each layer's attention, padded keys masked
    # the embeddings' norm alone, then three post-norms a layer (attention, feed-forward, module) in the products'
    # calls where rows are split (the modules' always are); the columns split normalises after
    assert len(normed) == (0 if autocast else 1 + (0 if split.endswith("rows split") else 2 * 2))
    assert moduled == [3, 3]  # the modules: one call a layer for the three languages' segments, both products
    assert calls == [1] * 4 * 2  # the linears (under autocast the residual's sum follows in fp32)
    assert (fast - exact)[real].abs().max() <= 1.5 * (plain - exact)[real].abs().max() + 1e-3


@needs_vector_kernel
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_is_torchs_bf16_layer_norm(affine):
    """float32 statistics and one rounding, as torch: the same bf16 values but for rare last-bit ties."""
    torch.manual_seed(0)
    x = (torch.randn(3, 50, 96) * 3 + 1).bfloat16()
    weight, bias = ((torch.randn(96) * 0.2 + 1).bfloat16(), (torch.randn(96) * 0.2).bfloat16()) if affine else (None, None)
    got = native.layer_norm(x, weight, bias, 1e-5)
    want = torch.nn.functional.layer_norm(x, (96,), weight, bias, 1e-5)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    assert (got == want).float().mean() > 0.999 and within_one_rounding(got, want.float())


@needs_vector_kernel
def test_layer_norm_bad_inputs_name_the_value():
    x = torch.randn(4, 32).bfloat16()
    with pytest.raises(ValueError, match=r"multiple of 16 values, got torch.bfloat16 \(4, 24\)"):
        native.layer_norm(x[:, :24].contiguous(), None, None, 1e-5)
    with pytest.raises(ValueError, match=r"bf16 weight of shape \(32,\), got torch.float32"):
        native.layer_norm(x, torch.ones(32), None, 1e-5)


@needs_vector_kernel
def test_the_models_layer_norm_runs_the_kernel_in_bf16_inference_only(monkeypatch):
    norm = kernels.LayerNorm(64).bfloat16().eval()
    with torch.no_grad():
        norm.weight.normal_(1, 0.2), norm.bias.normal_(0, 0.2)
    x = torch.randn(5, 7, 64).bfloat16()
    calls = []
    original = native.layer_norm
    monkeypatch.setattr(native, "layer_norm", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        got = norm(x)
    assert calls == [1] and within_one_rounding(got, torch.nn.LayerNorm.forward(norm, x).float())
    norm(x)  # autograd on: torch's
    with torch.no_grad():
        norm.float()(x.float())  # float32: torch's
        norm.bfloat16().train()(x)  # training: torch's
    assert calls == [1]
    assert set(norm.state_dict()) == {"weight", "bias"}  # nn.LayerNorm's names


def heads(b, t, h, d, seed=0):
    """q, k, v as the model makes them: (B, H, T, D) views of one (B, T, 3, H, D) projection."""
    torch.manual_seed(seed)
    return torch.randn(b, t, 3, h, d).bfloat16().permute(2, 0, 3, 1, 4).unbind(0)


@needs_amx_kernel
@pytest.mark.parametrize("b,t,h,d,masked", [(2, 128, 3, 64, False), (3, 37, 2, 64, True), (2, 5, 1, 32, True),
                                            (1, 200, 2, 32, True)])
def test_attention_is_as_accurate_as_torchs_bf16_attention(b, t, h, d, masked):
    q, k, v = heads(b, t, h, d)
    keep = torch.ones(b, t, dtype=torch.bool)
    if masked:
        for row in range(b):
            keep[row, max(1, t - 3 * row - 1):] = False
    mask = keep[:, None, None, :] if masked else None
    got = native.attention(q, k, v, keep if masked else None)
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    torch_bf16 = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert got.shape == (b, h, t, d) and got.dtype == torch.bfloat16
    assert (got.double() - exact).abs().max() <= 1.25 * (torch_bf16.double() - exact).abs().max() + 1e-4
    laid_back = got.transpose(1, 2).reshape(b, t, h * d)  # what the model does next: no copy
    assert laid_back.data_ptr() == got.data_ptr()


@needs_amx_kernel
def test_attention_with_peaked_scores_is_as_accurate_as_torchs():
    """q and k of standard deviation 4 (scores of 16): most keys lie far below their row's maximum, where the
    exponentials would be float32 denormals; the kernel takes them as 0 (no slow denormal arithmetic)."""
    qkv = (4 * torch.randn(2, 128, 3, 2, 64, generator=torch.Generator().manual_seed(5))).bfloat16()
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    got = native.attention(q, k, v, None)
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    torch_bf16 = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (got.double() - exact).abs().max() <= 1.25 * (torch_bf16.double() - exact).abs().max() + 1e-4


def masked_row_is_zero_and_bad_inputs_are_named():
    """native.attention (whichever kernel it takes): an example whose every key is masked comes out zero (not NaN),
    the others not; D not a multiple of 32 and a keep mask of the wrong shape are named."""
    q, k, v = heads(2, 8, 1, 32)
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[1] = False
    got = native.attention(q, k, v, keep)
    assert torch.isfinite(got.float()).all() and not got[1].float().any() and got[0].float().any()
    with pytest.raises(ValueError, match="multiple of 32"):
        native.attention(*heads(1, 8, 1, 48), None)
    with pytest.raises(ValueError, match=r"bool keep mask of shape \(2, 8\)"):
        native.attention(q, k, v, keep[:, :4])


@needs_amx_kernel
def test_attention_of_a_row_with_every_key_masked_is_zero_and_bad_inputs_are_named():
    masked_row_is_zero_and_bad_inputs_are_named()


@needs_vector_kernel
def test_keep_mask_does_not_depend_on_the_thread_count(monkeypatch):
    """Dropout's keep mask: 1, 2 and 3 threads (5 groups of 8 chunks in vector lanes, a whole chunk and a short one
    left to the scalar chain) give the same bits, numpy's; the same for seeds of one and two 32-bit words."""
    from xmodlm.kernels import dropout
    n, threshold = 41 * dropout.MASK_CHUNK + 7, round(0.1 * 65536) - 32768
    threads, masks = torch.get_num_threads(), []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            masks.append(dropout.keep_draws(12345, n, threshold))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(native, "available", lambda: False)  # numpy's path
    want = dropout.keep_draws(12345, n, threshold)
    assert all(torch.equal(mask, want) for mask in masks)
    # the thresholds' ends: every draw kept, none
    assert bool(native.keep_mask(12345, n, dropout.MASK_CHUNK, -32768).all())
    assert not bool(native.keep_mask(12345, n, dropout.MASK_CHUNK, 32768).any())
    for seed in (0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1):  # the seed's one or two 32-bit words, hashed in C
        assert torch.equal(native.keep_mask(seed, 9 * dropout.MASK_CHUNK + 5, dropout.MASK_CHUNK, threshold),
                           dropout.keep_draws(seed, 9 * dropout.MASK_CHUNK + 5, threshold)), seed


@needs_amx_kernel
def test_results_do_not_depend_on_the_thread_count_or_on_concurrent_callers():
    """Each output is summed by one thread in one order: one thread, two threads, rows or columns split,
    and two Python threads calling at once give the same bits."""
    import threading
    torch.manual_seed(0)
    x, weight = torch.randn(200, 96).bfloat16(), (torch.randn(64, 96) / 10).bfloat16()
    packed, bias = native.pack(weight), torch.randn(64)
    threads = torch.get_num_threads()
    want = native.segments_linear(x, (120, 80), [packed, packed], [bias, None], 64, "gelu")
    try:
        torch.set_num_threads(1)
        assert torch.equal(native.segments_linear(x, (120, 80), [packed, packed], [bias, None], 64, "gelu"), want)
    finally:
        torch.set_num_threads(threads)
    results = [None, None]

    def call(i):
        results[i] = native.segments_linear(x, (120, 80), [packed, packed], [bias, None], 64, "gelu", split_rows=bool(i))
    workers = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all(torch.equal(r, want) for r in results)


@needs_vector_kernel
@pytest.mark.parametrize("rows,v,stride", [(303, 32000, 32000), (21, 300, 300), (5, 1001, 1040)])
def test_cross_entropy_is_the_float32_softmax_loss_and_its_gradient(rows, v, stride):
    """Per-row loss within float32 rounding of float64's, the gradient within one bf16 rounding of float64's
    (softmax - one-hot) / rows; a vocabulary with a tail of fewer than 16 and rows read at a stride (a slice of
    wider logits)."""
    g = torch.Generator().manual_seed(rows)
    wide = (4 * torch.randn(rows, stride, generator=g)).bfloat16()
    logits = wide[:, :v]
    targets = torch.randint(0, v, (rows,), generator=g)
    losses, grad = native.cross_entropy(logits, targets, 1.0 / rows)
    exact = logits.double()
    want_losses = torch.logsumexp(exact, 1) - exact.gather(1, targets[:, None]).squeeze(1)
    assert ((losses.double() - want_losses).abs() <= 1e-6 * want_losses.abs() + 1e-6).all()
    want_grad = (torch.softmax(exact, 1) - torch.nn.functional.one_hot(targets, v)) / rows
    assert grad.dtype == torch.bfloat16 and grad.shape == (rows, v)
    assert bool(((grad.double() - want_grad).abs() <= 2 ** -8 * want_grad.abs() + 1e-12).all())


@needs_vector_kernel
def test_cross_entropy_through_the_kernel_matches_the_sliced_path(monkeypatch):
    """The fused loss of bf16 logits takes the kernel where it is built: the same loss as the 16-row slices to
    float32 rounding, the gradient equal but for last-bit differences of bf16 rounding."""
    from xmodlm.kernels import loss as kernel_loss
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(40, 500, generator=g)).bfloat16()
    targets = torch.randint(0, 500, (40,), generator=g)
    calls, original = [], native.cross_entropy
    monkeypatch.setattr(native, "cross_entropy", lambda *args: calls.append(1) or original(*args))
    ours_loss, ours_grad = kernel_loss._loss_and_gradient(logits, targets)
    assert calls
    monkeypatch.setattr(native, "available", lambda: False)
    sliced_loss, sliced_grad = kernel_loss._loss_and_gradient(logits, targets)
    assert abs(ours_loss.item() - sliced_loss.item()) <= 1e-6 * sliced_loss.item()
    assert (ours_grad != sliced_grad).float().mean() < 1e-3
    assert (ours_grad.float() - sliced_grad.float()).abs().max() <= 2 ** -8 * sliced_grad.float().abs().max()


@needs_vector_kernel
def test_cross_entropy_bad_inputs_name_the_value():
    logits = torch.zeros(4, 10, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"targets in \[0, 10\)"):
        native.cross_entropy(logits, torch.tensor([0, 1, 2, 10]), 0.25)
    with pytest.raises(ValueError, match="bf16"):
        native.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 3]), 0.25)
