"""Parity of xmodlm.model with transformers' Xmod classes (the reference), routing, languages, errors.

Every parity test builds a tiny random model of ours (2 layers, width 32, vocab 100, 3 languages),
writes it with ``save_pretrained``, loads that directory with the named ``transformers.Xmod*``
class and compares in eval mode, float32, dropout off: max abs diff <= 1e-5.
All weights (LayerNorms and biases included) are randomised so that a misplaced norm, residual
or module cannot hide behind the initialiser's ones and zeros.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from tiny import LANGS, TOL, VOCAB, ours, tiny_config

import xmodlm.kernels.modules as kernel_modules
import xmodlm.model as model_mod
from xmodlm.model import (
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodModel,
)

MIXED = [2, 0, 1, 0, 2]  # interleaved: the reference masks per language, we regroup the rows

# The layer variants the reference supports (its lang_adapter flags); the first two are the
# released configurations (xmod-base post-norm, the paper's large pre-norm model).
VARIANTS = {
    "post-norm": {},
    "pre-norm": dict(pre_norm=True, adapter_layer_norm=True, adapter_reuse_layer_norm=False,
                     ln_before_adapter=False, adapter_reduction_factor=4),
    "post-norm-residual-before-reused-norm": dict(ln_before_adapter=False),
    "post-norm-no-module-norm": dict(adapter_reuse_layer_norm=False, ln_before_adapter=False),
    "post-norm-own-module-norm": dict(adapter_layer_norm=True),
    "pre-norm-reused-norm-residual-after": dict(pre_norm=True, adapter_reuse_layer_norm=True, ln_before_adapter=True),
    "pre-norm-no-module-norm": dict(pre_norm=True, adapter_reuse_layer_norm=False, ln_before_adapter=True),
}








def reference(model, tmp_path, ref_cls):
    """The same weights in transformers' class, with nothing missing or unexpected."""
    model.save_pretrained(tmp_path)
    ref, info = ref_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return ref.eval()


def batch(b=5, t=12, lengths=None, seed=0):
    """<s> tokens </s> then padding (id 1); lengths per row (default: all full)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (b, t), generator=g)
    ids[:, 0] = 0
    mask = torch.ones(b, t, dtype=torch.long)
    for row, n in enumerate(lengths or [t] * b):
        ids[row, n - 1] = 2
        ids[row, n:] = 1
        mask[row, n:] = 0
    return ids, mask


def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def assert_close_gradients(got: dict, want: dict, rel: float) -> None:
    """The same parameters have gradients, each within ``rel`` of the largest value of want's (or of 1)."""
    assert got.keys() == want.keys()
    for name, grad in got.items():
        assert maxdiff(grad, want[name]) <= rel * max(1.0, want[name].abs().max().item()), name


needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch build")


def spy(monkeypatch, name, outputs=None):
    """Count the calls of the kernels' module path ``name`` (xmodlm.kernels.modules.<name>) that
    return a result, in every layer (and keep the results in ``outputs``)."""
    calls = []
    original = getattr(kernel_modules, name)

    def wrapped(*args):
        y = original(*args)
        calls.append(y is not None)
        if outputs is not None and y is not None:
            outputs.append(y)
        return y
    monkeypatch.setattr(kernel_modules, name, wrapped)
    return calls


# ---------------------------------------------------------------------------------------
# Encoder parity, layer variants, routing
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_encoder_matches_reference_for_every_layer_variant(variant, tmp_path, monkeypatch):
    """Reference: transformers.XmodModel (last_hidden_state, pooler_output, hidden_states)."""
    model = ours(XmodModel, **VARIANTS[variant])
    ref = reference(model, tmp_path, transformers.XmodModel)
    ids, mask = batch(lengths=[12, 7, 12, 4, 9])
    lang = torch.tensor(MIXED)
    calls = spy(monkeypatch, "run_grouped")
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, lang_ids=lang, output_hidden_states=True)
        first = model(ids, attention_mask=mask, lang_ids=lang).last_hidden_state  # the layout's first sighting
        got = model(ids, attention_mask=mask, lang_ids=lang, output_hidden_states=True)  # grouped modules on CPU
    assert calls[-1] or not torch.backends.mkldnn.is_available()
    real = mask.bool()
    assert maxdiff(first[real], want.last_hidden_state[real]) <= TOL
    assert maxdiff(got.last_hidden_state[real], want.last_hidden_state[real]) <= TOL
    assert maxdiff(got.last_hidden_state, want.last_hidden_state) <= TOL  # pad positions too
    assert maxdiff(got.pooler_output, want.pooler_output) <= TOL
    assert len(got.hidden_states) == len(want.hidden_states) == 3
    for g, w in zip(got.hidden_states, want.hidden_states):
        assert maxdiff(g, w) <= TOL


def test_languages_change_the_output():
    """Guards the parity tests against a vacuous pass: the module choice must matter."""
    model = ours(XmodModel)
    ids, _ = batch(b=1)
    with torch.no_grad():
        outs = [model(ids, lang_ids=[code]).last_hidden_state for code in LANGS]
    assert maxdiff(outs[0], outs[1]) > 1e-2 and maxdiff(outs[1], outs[2]) > 1e-2


@pytest.mark.parametrize("rows", [[1] * 10, [2, 2, 2, 1, 2, 2, 2, 2, 2, 2]], ids=["equal", "padded"])
def test_many_languages_take_the_batched_path_and_match_reference(rows, tmp_path, monkeypatch):
    """Reference: transformers.XmodForMaskedLM. Ten languages in one batch run their modules as one
    padded batched matmul (kernels.modules.run_batched); forward and gradients must match."""
    codes = [f"l{i}_XX" for i in range(10)]
    model = ours(languages=codes)
    ref = reference(model, tmp_path, transformers.XmodForMaskedLM)
    lang = torch.tensor([i for i, n in enumerate(rows) for _ in range(n)])[torch.randperm(sum(rows))]
    ids, mask = batch(b=len(lang), lengths=[12 - i % 5 for i in range(len(lang))])
    calls = spy(monkeypatch, "run_batched")
    got = model(ids, attention_mask=mask, lang_ids=lang, labels=ids, all_logits=True)
    want = ref(input_ids=ids, attention_mask=mask, lang_ids=lang, labels=ids)
    assert calls, "the batched path was not taken"
    assert maxdiff(got.logits, want.logits) <= TOL
    got.loss.backward()
    want.loss.backward()
    name = "roberta.encoder.layer.1.output.adapter_modules.l3_XX.dense1.weight"
    assert maxdiff(model.get_parameter(name).grad, ref.get_parameter(name).grad) <= TOL
    with torch.no_grad():  # inference: cached stacks, the residual inside the product (equal segments)
        for _ in range(2):
            got = model(ids, attention_mask=mask, lang_ids=lang, labels=ids, all_logits=True)
            assert maxdiff(got.logits, want.logits) <= TOL


@needs_onednn
@pytest.mark.parametrize("rows", [[1] * 6, [2, 1, 1, 1, 1, 1, 1], [2, 2, 4]], ids=["one-each", "one-twice", "multiples"])
def test_grouped_modules_match_reference_once_the_layout_repeats(rows, tmp_path, monkeypatch):
    """Reference: transformers.XmodModel. In inference a repeated language layout runs every module
    as one grouped convolution (kernels.modules.run_grouped); the first sighting takes the other paths."""
    codes = [f"l{i}_XX" for i in range(len(rows))]
    model = ours(XmodModel, languages=codes)
    ref = reference(model, tmp_path, transformers.XmodModel)
    lang = torch.tensor([i for i, n in enumerate(rows) for _ in range(n)])[torch.randperm(sum(rows))]
    ids, mask = batch(b=len(lang), lengths=[12 - i % 5 for i in range(len(lang))])
    outputs = []
    calls = spy(monkeypatch, "run_grouped", outputs)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, lang_ids=lang).last_hidden_state
        first = model(ids, attention_mask=mask, lang_ids=lang).last_hidden_state
        assert calls == [False, False]  # seen once: not packed yet
        for _ in range(2):
            got = model(ids, attention_mask=mask, lang_ids=lang).last_hidden_state
        assert calls[2:] == [True] * 4
        assert all(y.is_contiguous() for y in outputs)  # as every other path: views would break user code
    real = mask.bool()  # padded positions are left unspecified
    assert maxdiff(first[real], want[real]) <= TOL and maxdiff(got[real], want[real]) <= TOL


@pytest.mark.parametrize("langs", [[1, 1, 1, 1, 1], [0, 0, 1, 2, 2], MIXED, [2, 1, 0, 1, 2]],
                         ids=["single", "grouped", "interleaved", "reversed"])
def test_batch_orders_match_reference(langs, tmp_path):
    """Reference: transformers.XmodForMaskedLM; a row's output must not depend on its neighbours."""
    model = ours()
    ref = reference(model, tmp_path, transformers.XmodForMaskedLM)
    ids, mask = batch(lengths=[12, 10, 5, 12, 8])
    lang = torch.tensor(langs)
    with torch.no_grad():
        got = model(ids, attention_mask=mask, lang_ids=lang).logits
        want = ref(input_ids=ids, attention_mask=mask, lang_ids=lang).logits
        alone = torch.cat([model(ids[i:i + 1], attention_mask=mask[i:i + 1], lang_ids=[langs[i]]).logits
                           for i in range(len(langs))])
    assert maxdiff(got, want) <= TOL
    assert maxdiff(got, alone) <= TOL


def test_lang_ids_forms_give_identical_output():
    """Codes, int lists, (B,) tensors, (B, T) tensors (the reference's documented shape), floats."""
    model = ours(XmodModel)
    ids, mask = batch()
    forms = [
        [LANGS[i] for i in MIXED],
        list(MIXED),
        torch.tensor(MIXED),
        torch.tensor(MIXED).float(),  # the reference builds its default ids with torch.ones (float)
        torch.tensor(MIXED)[:, None].expand(-1, ids.shape[1]),
    ]
    with torch.no_grad():
        outs = [model(ids, attention_mask=mask, lang_ids=f).last_hidden_state for f in forms]
        one = model(ids, attention_mask=mask, lang_ids="de_DE").last_hidden_state
        one_list = model(ids, attention_mask=mask, lang_ids=[1] * 5).last_hidden_state
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    assert torch.equal(one, one_list)


# ---------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["post-norm", "pre-norm"])
def test_masked_lm_matches_reference(variant, tmp_path):
    """Reference: transformers.XmodForMaskedLM (loss, logits at every position)."""
    model = ours(XmodForMaskedLM, **VARIANTS[variant])
    ref = reference(model, tmp_path, transformers.XmodForMaskedLM)
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    lang = torch.tensor(MIXED)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, lang_ids=lang, labels=labels)
        got = model(ids, attention_mask=mask, lang_ids=lang, labels=labels)
        full = model(ids, attention_mask=mask, lang_ids=lang, labels=labels, all_logits=True)
        plain = model(ids, attention_mask=mask, lang_ids=lang)
    scored = labels.ne(-100)
    assert got.logits.shape == (int(scored.sum()), VOCAB)  # only the scored positions by default
    assert maxdiff(got.logits, want.logits[scored]) <= TOL
    assert abs(got.loss.item() - want.loss.item()) <= TOL
    assert full.logits.shape == (5, 12, VOCAB) and maxdiff(full.logits, want.logits) <= TOL
    assert abs(full.loss.item() - want.loss.item()) <= TOL
    assert plain.loss is None and plain.logits.shape == (5, 12, VOCAB)
    assert maxdiff(plain.logits, want.logits) <= TOL


def test_sequence_classification_matches_reference(tmp_path):
    """Reference: transformers.XmodForSequenceClassification (3 labels from id2label; loss)."""
    model = ours(XmodForSequenceClassification, id2label={0: "entailment", 1: "neutral", 2: "contradiction"})
    ref = reference(model, tmp_path, transformers.XmodForSequenceClassification)
    assert ref.config.num_labels == 3
    ids, mask = batch(lengths=[12, 8, 10, 12, 3])
    labels = torch.tensor([0, 2, 1, 1, 0])
    with torch.no_grad():
        got = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels)
        want = ref(input_ids=ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels)
    assert got.logits.shape == (5, 3)
    assert maxdiff(got.logits, want.logits) <= TOL
    assert abs(got.loss.item() - want.loss.item()) <= TOL


def test_token_classification_matches_reference(tmp_path):
    """Reference: transformers.XmodForTokenClassification (logits, loss with ignored -100 labels)."""
    model = ours(XmodForTokenClassification, id2label={i: t for i, t in enumerate(["O", "B-PER", "I-PER", "B-LOC"])})
    ref = reference(model, tmp_path, transformers.XmodForTokenClassification)
    ids, mask = batch(lengths=[12, 8, 10, 12, 3])
    labels = torch.randint(0, 4, ids.shape, generator=torch.Generator().manual_seed(1))
    labels[mask == 0] = -100
    with torch.no_grad():
        got = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels)
        want = ref(input_ids=ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), labels=labels)
    assert got.logits.shape == (5, 12, 4)
    assert maxdiff(got.logits, want.logits) <= TOL
    assert abs(got.loss.item() - want.loss.item()) <= TOL


def test_question_answering_matches_reference(tmp_path):
    """Reference: transformers.XmodForQuestionAnswering (start/end logits; loss, out-of-range positions ignored)."""
    model = ours(XmodForQuestionAnswering)
    ref = reference(model, tmp_path, transformers.XmodForQuestionAnswering)
    ids, mask = batch(lengths=[12, 8, 10, 12, 3])
    start, end = torch.tensor([1, 3, 0, 40, 2]), torch.tensor([2, 5, 0, 41, 2])
    with torch.no_grad():
        got = model(ids, attention_mask=mask, lang_ids=torch.tensor(MIXED), start_positions=start, end_positions=end)
        want = ref(input_ids=ids, attention_mask=mask, lang_ids=torch.tensor(MIXED),
                   start_positions=start, end_positions=end)
    assert maxdiff(got.start_logits, want.start_logits) <= TOL
    assert maxdiff(got.end_logits, want.end_logits) <= TOL
    assert abs(got.loss.item() - want.loss.item()) <= TOL


def _reference_multiple_choice(ref, ids, mask, flat_langs):
    """What transformers.XmodForMultipleChoice computes, with one language per flattened row."""
    B, C, T = ids.shape
    pooled = ref.roberta(input_ids=ids.view(-1, T), attention_mask=mask.view(-1, T), lang_ids=flat_langs).pooler_output
    return ref.classifier(ref.dropout(pooled)).view(B, C)


def test_multiple_choice_matches_reference(tmp_path):
    """Reference: transformers.XmodForMultipleChoice with one language for the whole batch
    (``lang_ids=tensor([k])``, which it repeats), and its encoder on the flattened choices for
    per-example (B,) and per-choice (B, C) languages, which its own forward cannot take."""
    model = ours(XmodForMultipleChoice)
    ref = reference(model, tmp_path, transformers.XmodForMultipleChoice)
    ids, mask = batch(b=6, t=10, lengths=[10, 7, 10, 5, 9, 10])
    ids, mask = ids.view(2, 3, 10), mask.view(2, 3, 10)
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        for k in range(len(LANGS)):
            want = ref(input_ids=ids, attention_mask=mask, lang_ids=torch.tensor([k]), labels=labels)
            got = model(ids, attention_mask=mask, lang_ids=torch.tensor([k]), labels=labels)
            per_example = model(ids, attention_mask=mask, lang_ids=torch.tensor([k, k])).logits
            assert maxdiff(got.logits, want.logits) <= TOL
            assert abs(got.loss.item() - want.loss.item()) <= TOL
            assert maxdiff(per_example, want.logits) <= TOL

        mixed = model(ids, attention_mask=mask, lang_ids=torch.tensor([2, 0])).logits
        codes = model(ids, attention_mask=mask, lang_ids=["fr_XX", "en_XX"]).logits
        want = _reference_multiple_choice(ref, ids, mask, torch.tensor([2, 2, 2, 0, 0, 0]))
        assert maxdiff(mixed, want) <= TOL and torch.equal(mixed, codes)

        per_choice = torch.tensor([[0, 1, 2], [2, 2, 1]])
        got = model(ids, attention_mask=mask, lang_ids=per_choice).logits
        want = _reference_multiple_choice(ref, ids, mask, per_choice.view(-1))
        assert maxdiff(got, want) <= TOL


def test_reference_multiple_choice_rejects_per_example_languages(tmp_path):
    """Documents a defect of transformers.XmodForMultipleChoice (5.24): it repeats lang_ids
    B*C times instead of per choice, so one id per example raises IndexError."""
    model = ours(XmodForMultipleChoice)
    ref = reference(model, tmp_path, transformers.XmodForMultipleChoice)
    ids, mask = batch(b=6, t=10)
    try:
        with torch.no_grad():
            ref(input_ids=ids.view(2, 3, 10), attention_mask=mask.view(2, 3, 10), lang_ids=torch.tensor([2, 0]))
    except IndexError:
        return
    pytest.skip("the reference's XmodForMultipleChoice no longer fails on per-example lang_ids")


# ---------------------------------------------------------------------------------------
# Gradients and mixed precision
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["post-norm", "pre-norm"])
def test_masked_lm_gradients_match_reference(variant, tmp_path):
    """Reference: transformers.XmodForMaskedLM, backward of the MLM loss, dropout off."""
    model = ours(XmodForMaskedLM, **VARIANTS[variant])
    ref = reference(model, tmp_path, transformers.XmodForMaskedLM)
    model.train(), ref.train()  # dropout probabilities are 0: train mode is deterministic here
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 1:4] = ids[:, 1:4]
    lang = torch.tensor(MIXED)
    model(ids, attention_mask=mask, lang_ids=lang, labels=labels).loss.backward()
    ref(input_ids=ids, attention_mask=mask, lang_ids=lang, labels=labels).loss.backward()
    names = [
        "roberta.embeddings.word_embeddings.weight",  # tied with the decoder: both paths add up
        "roberta.embeddings.LayerNorm.weight",
        "roberta.encoder.layer.0.attention.self.query.weight",
        "roberta.encoder.layer.0.output.adapter_modules.en_XX.dense1.weight",
        "roberta.encoder.layer.1.output.adapter_modules.fr_XX.dense2.bias",
        "roberta.encoder.layer.1.output.LayerNorm.weight",
        "lm_head.dense.weight",
        "lm_head.bias",
    ]
    ours_params, ref_params = dict(model.named_parameters()), dict(ref.named_parameters())
    for name in names:
        g, w = ours_params[name].grad, ref_params[name].grad
        assert g is not None and w is not None, name
        assert maxdiff(g, w) <= TOL * max(1.0, w.abs().max().item()), name
    # German is not in the batch: its module gets no gradient in either implementation.
    unused = "roberta.encoder.layer.0.output.adapter_modules.de_DE.dense1.weight"
    lang = torch.tensor([0, 2, 2, 0, 0])
    model.zero_grad(), ref.zero_grad()
    model(ids, attention_mask=mask, lang_ids=lang, labels=labels).loss.backward()
    assert ours_params[unused].grad is None or not ours_params[unused].grad.any()


def test_bf16_autocast_forward_and_backward():
    """Ours under torch.autocast(cpu, bfloat16) with a mixed-language batch: runs forward and
    backward and stays close to float32 (loose tolerance: bfloat16 has 8 mantissa bits)."""
    model = ours(XmodForMaskedLM)
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    labels = torch.full_like(ids, -100)
    labels[:, 2:6] = ids[:, 2:6]
    lang = torch.tensor(MIXED)
    with torch.no_grad():
        fp32 = model(ids, attention_mask=mask, lang_ids=lang, labels=labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention_mask=mask, lang_ids=lang, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert abs(out.loss.item() - fp32.loss.item()) < 0.05 * abs(fp32.loss.item())
    assert maxdiff(out.logits, fp32.logits) < 0.05 * fp32.logits.abs().max().item()
    grad = model.roberta.encoder.layer[0].output.adapter_modules["fr_XX"].dense1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_reference_crashes_under_bf16_autocast(tmp_path):
    """Documents a defect of transformers.XmodForMaskedLM (5.24): under bfloat16 autocast its
    lang_adapter writes bf16 module outputs into a float32 buffer (index_put dtype mismatch)."""
    model = ours(XmodForMaskedLM)
    ref = reference(model, tmp_path, transformers.XmodForMaskedLM)
    ids, mask = batch()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref(input_ids=ids, attention_mask=mask, lang_ids=torch.tensor(MIXED))
    except RuntimeError:
        return
    pytest.skip("the reference no longer fails under bfloat16 autocast")


# ---------------------------------------------------------------------------------------
# Errors and default languages
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lang_ids, expected",
    [
        (["en_XX", "xx_YY", "en_XX", "en_XX", "en_XX"], "'xx_YY'"),
        ("es_XX", "'es_XX'"),
        (torch.tensor([0, 1, 3, 0, 0]), "language id 3"),
        ([0, -1, 0, 0, 0], "language id -1"),
    ],
    ids=["unknown-code", "unknown-single-code", "id-too-large", "negative-id"],
)
def test_bad_language_names_value_and_languages(lang_ids, expected):
    """Our errors; the reference silently leaves unknown ids' rows at zero."""
    model = ours(XmodModel)
    ids, _ = batch()
    with pytest.raises(ValueError) as err:
        model(ids, lang_ids=lang_ids)
    assert expected in str(err.value) and str(LANGS) in str(err.value)


def test_wrong_lang_ids_length():
    model = ours(XmodModel)
    ids, _ = batch()
    with pytest.raises(ValueError, match="lang_ids has 2 entries for a batch of 5"):
        model(ids, lang_ids=[0, 1])
    with pytest.raises(ValueError, match="one language per row"):
        model(ids, lang_ids=torch.tensor([[0, 1] * 6] * 5))


def test_missing_lang_ids_without_default_language():
    model = ours(XmodModel)
    ids, _ = batch()
    with pytest.raises(ValueError, match="default_language") as err:
        model(ids)
    assert str(LANGS) in str(err.value)


def test_default_language_matches_reference(tmp_path):
    """Reference: transformers.XmodForMaskedLM.set_default_language; also config.default_language."""
    model = ours()
    ref = reference(model, tmp_path, transformers.XmodForMaskedLM)
    ids, mask = batch()
    model.set_default_language("fr_XX")
    ref.set_default_language("fr_XX")
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
        explicit = model(ids, attention_mask=mask, lang_ids=["fr_XX"] * 5).logits
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(got, explicit) and maxdiff(got, want) <= TOL
    with pytest.raises(ValueError, match="'pt_XX'.*en_XX"):
        model.set_default_language("pt_XX")

    configured = XmodModel(tiny_config(default_language="de_DE")).eval()
    with torch.no_grad():
        assert torch.equal(configured(ids).last_hidden_state, configured(ids, lang_ids=[1] * 5).last_hidden_state)


def test_too_long_sequence_is_an_error():
    model = ours(XmodModel)  # max_position_embeddings 130, positions start at 2: at most 128 tokens
    ok = torch.full((1, 128), 5)
    with torch.no_grad():
        model(ok, lang_ids=[0])
    with pytest.raises(ValueError, match="max_position_embeddings is 130.*at most 128 tokens"):
        model(torch.full((1, 129), 5), lang_ids=[0])


# ---------------------------------------------------------------------------------------
# Adding languages, freezing
# ---------------------------------------------------------------------------------------
def test_add_language_leaves_old_languages_bit_identical():
    model = ours()
    ids, mask = batch(lengths=[12, 9, 12, 6, 11])
    with torch.no_grad():
        before_mixed = model(ids, attention_mask=mask, lang_ids=MIXED).logits
        before_single = model(ids, attention_mask=mask, lang_ids="de_DE").logits
    assert model.add_language("sw_KE") == 3
    assert model.config.languages == LANGS + ["sw_KE"]
    assert list(model.roberta.encoder.layer[1].output.adapter_modules) == LANGS + ["sw_KE"]
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask, lang_ids=MIXED).logits, before_mixed)
        assert torch.equal(model(ids, attention_mask=mask, lang_ids="de_DE").logits, before_single)
        new = model(ids, attention_mask=mask, lang_ids=[3, 0, 3, 1, 2]).logits
    assert torch.isfinite(new).all()
    with pytest.raises(ValueError, match="already"):
        model.add_language("en_XX")
    with pytest.raises(ValueError, match="'xx_YY'"):
        model.add_language("yo_NG", init_from="xx_YY")


def test_add_language_copy_and_average_init():
    model = ours()
    ids, mask = batch()
    model.add_language("de_CH", init_from="de_DE")
    model.add_language("rm_CH", init_from=["de_DE", "fr_XX"])
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask, lang_ids="de_CH").logits,
                           model(ids, attention_mask=mask, lang_ids="de_DE").logits)
    for layer in model.roberta.encoder.layer:
        mods = layer.output.adapter_modules
        for name, p in mods["de_CH"].named_parameters():
            assert torch.equal(p, mods["de_DE"].get_parameter(name))
            assert p.data_ptr() != mods["de_DE"].get_parameter(name).data_ptr()  # a copy, not shared
        for name, p in mods["rm_CH"].named_parameters():
            mean = (mods["de_DE"].get_parameter(name) + mods["fr_XX"].get_parameter(name)) / 2
            torch.testing.assert_close(p, mean, rtol=0, atol=1e-7)


def test_added_language_loads_in_reference(tmp_path):
    """Reference: transformers.XmodForMaskedLM reads a model with an added language."""
    model = ours()
    model.add_language("sw_KE", init_from="en_XX")
    with torch.no_grad():
        for p in model.roberta.encoder.layer[0].output.adapter_modules["sw_KE"].parameters():
            p.add_(0.1)
    ref = reference(model, tmp_path, transformers.XmodForMaskedLM)
    assert list(ref.config.languages) == LANGS + ["sw_KE"]
    ids, mask = batch()
    lang = torch.tensor([3, 0, 3, 1, 2])
    with torch.no_grad():
        assert maxdiff(model(ids, attention_mask=mask, lang_ids=lang).logits,
                       ref(input_ids=ids, attention_mask=mask, lang_ids=lang).logits) <= TOL


@pytest.mark.parametrize("cls", [XmodModel, XmodForMaskedLM])
def test_module_tables_are_the_layers_own_and_names_map_to_languages(cls):
    model = ours(cls)
    tables = model.module_tables()
    assert len(tables) == 2 and all(list(table) == LANGS for table in tables)
    assert all(table is layer.output.adapter_modules for table, layer in zip(tables, model.encoder_model.encoder.layer))
    languages = {name: model_mod.module_language(name) for name, _ in model.named_parameters()}
    assert {code for code in languages.values() if code} == set(LANGS)
    prefix = "" if cls is XmodModel else "roberta."
    assert languages[prefix + "encoder.layer.1.output.adapter_modules.fr_XX.dense2.bias"] == "fr_XX"
    assert languages[prefix + "encoder.layer.1.output.dense.weight"] is None


def test_an_added_module_follows_the_models_mode():
    model = ours(XmodModel)  # eval mode
    model.add_language("sw_KE")
    assert not any(m.training for m in model.modules())
    model.train().add_language("yo_NG")
    assert all(m.training for m in model.modules())


HEADS = [
    (XmodForMaskedLM, transformers.XmodForMaskedLM),
    (XmodForSequenceClassification, transformers.XmodForSequenceClassification),
    (XmodForTokenClassification, transformers.XmodForTokenClassification),
    (XmodForQuestionAnswering, transformers.XmodForQuestionAnswering),
    (XmodForMultipleChoice, transformers.XmodForMultipleChoice),
]


@pytest.mark.parametrize("variant", ["post-norm", "pre-norm"])
@pytest.mark.parametrize("ours_cls, ref_cls", HEADS, ids=[h[0].__name__ for h in HEADS])
def test_freeze_matches_reference(ours_cls, ref_cls, variant, tmp_path):
    """Reference: transformers' freeze_embeddings_and_language_adapters (embeddings, adapter_modules,
    adapter_layer_norm); everything else, heads included, stays trainable."""
    model = ours(ours_cls, **VARIANTS[variant])
    ref = reference(model, tmp_path, ref_cls)
    model.freeze_embeddings_and_language_adapters()
    ref.freeze_embeddings_and_language_adapters()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in ref.named_parameters() if not p.requires_grad}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, p in ref.named_parameters() if p.requires_grad}
    assert any(".adapter_modules.fr_XX." in n for n in frozen)
    assert any(n.startswith("roberta.embeddings.") for n in frozen)
    assert (variant == "pre-norm") == any(".adapter_layer_norm." in n for n in frozen)


def test_freeze_works_on_the_bare_encoder():
    """The reference's method reads self.roberta, so it fails on XmodModel; ours does not."""
    model = ours(XmodModel, **VARIANTS["pre-norm"])
    model.freeze_embeddings_and_language_adapters()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if n.startswith("embeddings.") or ".adapter_modules." in n or ".adapter_layer_norm." in n}
    assert frozen == expected
