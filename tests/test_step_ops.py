"""The training step's small ops outside the products (round 11): Dropout's mask and scale on float32 values in the
own kernel (kernels/dropout.py, native.mask_scale), the tied lookup's rows added unmasked where no id is padding
(kernels/tied.py's add_rows), and the routing's row permutation differentiated as a permutation (kernels/rows.py).
Each against the ops it replaces, bit for bit."""

from __future__ import annotations

import pytest
import torch

import xmodlm.kernels.dropout as kernel_dropout
import xmodlm.kernels.rows as kernel_rows
import xmodlm.kernels.tied as kernel_tied
import xmodlm.model as model_mod
from test_model import MIXED, batch
from tiny import ours
from xmodlm.kernels import native
from xmodlm.model import XmodForMaskedLM

needs_native = pytest.mark.skipif(not native.vector_available(), reason=f"own kernels not built: {native.vector_reason()}")


def addcmul(x, keep, scale):
    """main's _MaskAndScale: the mask converted to x's dtype, addcmul onto a zero."""
    return torch.addcmul(x.new_zeros(()), x, keep.to(x.dtype), value=scale)


def words(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


@needs_native
@pytest.mark.parametrize("n", [1, 15, 16, 33, 4096 + 7])
def test_mask_scale_kernel_is_addcmul_word_for_word(n):
    """Kept and dropped values, -0 (addcmul's 0 + -0 is +0), inf and NaN kept and dropped, lengths off the
    kernel's 16-value vectors."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g)
    keep = (torch.rand(n, generator=g) > 0.3).to(torch.uint8)
    special = torch.tensor([-0.0, 0.0, float("inf"), float("-inf"), float("nan"), -0.0, float("inf"), float("nan")])
    m = min(n, special.numel())
    x[:m] = special[:m]
    keep[:m] = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.uint8)[:m]
    scale = 65536 / (65536 - round(0.1 * 65536))
    assert torch.equal(words(native.mask_scale(x, keep, scale)), words(addcmul(x, keep, scale)))
    with pytest.raises(ValueError):
        native.mask_scale(x.bfloat16(), keep, scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("contiguous", [True, False])
def test_mask_and_scale_forward_and_backward_are_mains(dtype, contiguous, monkeypatch):
    """_MaskAndScale (the kernel for contiguous float32, addcmul elsewhere) against main's addcmul on the converted
    mask, forward and backward, with the kernels and without (where they are not built this runs twice without)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 48, generator=g).to(dtype)
    x = base if contiguous else base.t()
    keep = (torch.rand(x.shape, generator=g) > 0.1).to(torch.uint8)
    grad = torch.randn(x.shape, generator=g).to(dtype)
    scale = 65536 / (65536 - round(0.1 * 65536))
    for built in (native.vector_available(), False):
        monkeypatch.setattr(native, "vector_available", lambda: built)
        leaf = x.clone().requires_grad_(True)
        y = kernel_dropout._MaskAndScale.apply(leaf, keep, scale)
        y.backward(grad)
        assert torch.equal(words(y.detach()), words(addcmul(x, keep, scale)))
        assert torch.equal(words(leaf.grad), words(addcmul(grad, keep, scale)))


def test_add_rows_masks_only_where_padding_is_there():
    """Without a padding id the rows go in unmasked (no masked copy made), with one the padding row gets nothing:
    both as the masked rows would give."""
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(2, 3, 8, generator=g)
    dense = torch.randn(10, 8, generator=g)
    for ids in (torch.tensor([[2, 3, 2], [5, 9, 4]]), torch.tensor([[2, 1, 2], [1, 9, 4]])):
        want = dense.clone().index_add_(0, ids.reshape(-1), grad.reshape(-1, 8).masked_fill(
            (ids.reshape(-1) == 1)[:, None], 0.0))
        got = dense.clone()
        kernel_tied.add_rows(got, ids, grad, 1)
        assert torch.equal(words(got), words(want))
    assert torch.equal(got[1], dense[1])  # the padding row untouched


def test_permute_rows_is_index_select_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 5, generator=g)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    inverse = torch.argsort(order)
    grad = torch.randn(6, 4, 5, generator=g)
    grad[0, 0, :2] = -0.0
    leaf, plain = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = kernel_rows.permute_rows(leaf, order, inverse)
    y.backward(grad)
    plain.index_select(0, order).backward(grad)
    assert torch.equal(words(y.detach()), words(x.index_select(0, order)))
    assert torch.equal(leaf.grad, plain.grad)  # torch's index_add turns -0 into +0: the same values
    assert torch.equal(words(leaf.grad), words(grad.index_select(0, inverse)))
    with torch.no_grad():
        assert torch.equal(kernel_rows.permute_rows(x, order, inverse), x.index_select(0, order))


def test_mixed_batch_step_permutes_rows_with_the_same_gradients(monkeypatch):
    """A masked-LM step on an interleaved batch (padding in it) takes permute_rows both ways round, and gives the
    loss and gradients of main's index_select."""
    ids, mask = batch(lengths=[12, 9, 12, 5, 12])
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) < 0.3, ids, -100)
    results = []
    for permute in (kernel_rows.permute_rows, lambda x, order, inverse: x.index_select(0, order)):
        calls = []
        monkeypatch.setattr(model_mod, "permute_rows", lambda *a: calls.append(1) or permute(*a))
        model = ours(XmodForMaskedLM).train()
        torch.manual_seed(2)
        loss = model(ids, attention_mask=mask, lang_ids=MIXED, labels=labels).loss
        loss.backward()
        assert len(calls) == 2
        results.append([loss.detach()] + [p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
