"""The vector attention kernel (native.c's xm_attention_vector: bf16 inference attention by AVX-512's bf16 products,
for processors without AMX) against attention in float64 on the same bf16 inputs, next to torch's bf16 SDPA and
bf16_attention; its masks, strides and thread counts; the model's bf16 inference through it. On a processor with
AMX the tests run it all the same (``native.available`` patched to False: the wrapper then takes it); where the own
vector kernels cannot be built (no AVX-512 with bf16, no C compiler) they skip and say why."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from xmodlm.kernels import attention as kernel_attention
from xmodlm.kernels import native
from test_model import batch
from test_native import heads, masked_row_is_zero_and_bad_inputs_are_named, wide_model

pytestmark = pytest.mark.skipif(not native.vector_available(),
                                reason=f"own vector kernels not available: {native.vector_reason()}")


@pytest.fixture(autouse=True)
def vector_kernel(monkeypatch):
    """native.attention through xm_attention_vector (where AMX is present too), its calls counted."""
    monkeypatch.setattr(native, "available", lambda: False)
    lib, calls = native._library(), []
    vector, tiles = lib.xm_attention_vector, lib.xm_attention
    monkeypatch.setattr(lib, "xm_attention_vector", lambda *a: calls.append(a[6:10]) or vector(*a))
    monkeypatch.setattr(lib, "xm_attention", lambda *a: pytest.fail("the tile kernel ran") or tiles(*a))
    return calls


def key_mask(b, t):
    """Each example's last keys masked, a different count per example (at least one key kept)."""
    keep = torch.ones(b, t, dtype=torch.bool)
    for row in range(b):
        keep[row, max(1, t - 3 * row - 1):] = False
    return keep


def errors(q, k, v, keep):
    """The largest errors against float64 of the kernel, torch's bf16 SDPA and bf16_attention."""
    mask = None if keep is None else keep[:, None, None, :]
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    got = native.attention(q, k, v, keep)
    assert got.shape == q.shape and got.dtype == torch.bfloat16
    return [(out.double() - exact).abs().max().item()
            for out in (got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                        kernel_attention.bf16_attention(q, k, v, mask))]


@pytest.mark.parametrize("t", [1, 5, 37, 128, 200])
@pytest.mark.parametrize("d", [32, 64, 128])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_attention_is_as_accurate_as_torchs_bf16_attention(t, d, masked, vector_kernel):
    b, h = 3, 2
    q, k, v = heads(b, t, h, d)
    got, sdpa, hi_lo = errors(q, k, v, key_mask(b, t) if masked else None)
    assert got <= 1.25 * sdpa + 1e-4 and got <= 1.25 * hi_lo + 1e-4
    assert vector_kernel == [(b, h, t, d)]


def test_attention_with_peaked_scores_is_as_accurate_as_torchs():
    """q and k of standard deviation 4 (scores of 16): most keys lie far below their row's maximum, where the
    exponentials would be float32 denormals; the kernel takes them as 0."""
    qkv = (4 * torch.randn(2, 128, 3, 2, 64, generator=torch.Generator().manual_seed(5))).bfloat16()
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    got, sdpa, hi_lo = errors(q, k, v, None)
    assert got <= 1.25 * sdpa + 1e-4 and got <= 1.25 * hi_lo + 1e-4


def test_attention_of_a_row_with_every_key_masked_is_zero_and_bad_inputs_are_named():
    """As the AMX kernel (test_native's checks); besides, empty batches and sequences give empty results."""
    masked_row_is_zero_and_bad_inputs_are_named()
    for b, t in ((2, 0), (0, 5)):
        assert native.attention(*heads(b, t, 2, 32), None).shape == (b, 2, t, 32)


def test_strided_heads_of_one_projection_give_the_bits_of_contiguous_ones():
    """The heads read in place from the fused (B, T, 3, H, D) projection, as the model hands them; the result a
    (B, H, T, D) view of (B, T, H, D) memory, laid back without a copy."""
    b, t, h, d = 3, 45, 4, 64
    q, k, v = heads(b, t, h, d, seed=1)
    assert not q.is_contiguous()
    keep = key_mask(b, t)
    got = native.attention(q, k, v, keep)
    assert torch.equal(got, native.attention(q.contiguous(), k.contiguous(), v.contiguous(), keep))
    laid_back = got.transpose(1, 2).reshape(b, t, h * d)
    assert laid_back.data_ptr() == got.data_ptr()


def test_the_thread_count_does_not_change_the_bits():
    q, k, v = heads(5, 70, 3, 64, seed=2)
    keep = key_mask(5, 70)
    threads, results = torch.get_num_threads(), []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(native.attention(q, k, v, keep))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16-weights", "bf16-autocast"])
def test_model_inference_through_the_kernel_is_as_accurate_as_plain_bf16(autocast, vector_kernel, monkeypatch):
    """The model's bf16 inference (mixed lengths: padded keys masked) with attention through the kernel: no further
    from the fp32 model than with the attention it replaces (bf16_attention)."""
    monkeypatch.setattr(kernel_attention, "amx_bf16", lambda: False)  # where AMX is present: as on a machine without
    model = wide_model()
    ids, mask = batch(b=6, t=40, lengths=[40, 31, 40, 7, 40, 22])
    langs, real = [0, 1, 2, 0, 1, 2], mask.bool()
    with torch.no_grad():
        exact = model(ids, attention_mask=mask, lang_ids=langs).last_hidden_state
    low = model if autocast else copy.deepcopy(model).to(torch.bfloat16)

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return low(ids, attention_mask=mask, lang_ids=langs).last_hidden_state.float()
    fast = run()
    assert len(vector_kernel) == 2  # each layer's attention, through the vector kernel
    applies = kernel_attention.native_applies
    monkeypatch.setattr(kernel_attention, "native_applies", lambda *a: False)
    plain = run()
    monkeypatch.setattr(kernel_attention, "native_applies", applies)
    assert len(vector_kernel) == 2
    assert (fast - exact)[real].abs().max() <= 1.5 * (plain - exact)[real].abs().max() + 1e-3
    assert not torch.equal(fast, plain)  # the kernel's result, not the replaced path's
