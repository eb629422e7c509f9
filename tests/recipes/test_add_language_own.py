"""add-language --vocabulary own (the default): the new language gets a tokenizer and rows of its own. Run for real
on a tiny model pre-trained on small synthetic corpora: the shared rows, tokenizer and old languages' outputs and
scores stay bit-identical, the new language's ids and softmax stay in its rows, its tokenizer is saved where
load_language_tokenizer and transformers find it, a second addition keeps the first, and resume is exact."""

import json

import numpy as np
import pytest
import torch

from xmodlm import vocab as V
from xmodlm.cli import main
from xmodlm.data import validation_batches
from xmodlm.model import XmodForMaskedLM
from xmodlm.tokenizer import UNK_ID, language_tokenizer_dir, load_language_tokenizer, load_tokenizer

from test_add_language import (  # noqa: E402  (tests/recipes/ is on sys.path)
    COMMON, OLD, interrupt_then_resume, write_corpus)

SHARED = 220


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def base(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    assert main(["pretrain", "--data", str(corpus), "--languages", ",".join(OLD), "--out", str(out),
                 "--max-steps", "8", "--vocab-size", str(SHARED), "--lr", "2e-3", *COMMON]) == 0
    return out


def add(model, corpus, out, lang="nn_XX", *extra) -> int:
    return main(["add-language", "--model", str(model), "--lang", lang, "--data", str(corpus / f"{lang}.txt"),
                 "--out", str(out), "--max-steps", "4", "--save-every", "2", "--lr", "1e-2", "--extend-vocab", "40",
                 *COMMON, *extra])


@pytest.fixture(scope="module")
def added(base, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("added")
    assert add(base, corpus, out) == 0
    return out


def _results(directory):
    return json.loads((directory / "results.json").read_text())


def test_own_rows_follow_the_shared_ones_and_only_they_and_the_modules_train(base, added):
    r = _results(added)
    assert r["vocabulary"] == "own" and r["old_vocab_size"] == SHARED and r["vocab_size"] == SHARED + r["added_pieces"]
    before, after = XmodForMaskedLM.from_pretrained(base), XmodForMaskedLM.from_pretrained(added)
    a, b = before.state_dict(), after.state_dict()
    for name, x in a.items():
        y = b[name]
        if name in (V.EMBEDDING, V.LM_BIAS, "lm_head.decoder.weight", "lm_head.decoder.bias"):
            y = y[:SHARED]
        assert torch.equal(x, y), name  # every shared weight, the shared rows included
    assert after.config.vocab_range("nn_XX") == (SHARED, r["vocab_size"])
    assert all(after.config.vocab_range(code) == (0, SHARED) for code in OLD)
    own = after.roberta.embeddings.word_embeddings.weight[SHARED:]
    assert torch.isfinite(own).all() and own.std() > 0


def test_shared_tokenizer_keeps_every_id_and_the_language_tokenizer_uses_only_its_rows(base, added, corpus):
    old, shared = load_tokenizer(base), load_tokenizer(added)
    assert shared.get_vocab_size() == _results(added)["vocab_size"]  # padded: ids and rows match
    for code in [*OLD, "nn_XX"]:
        texts = (corpus / f"{code}.txt").read_text(encoding="utf-8").splitlines()
        assert [e.ids for e in old.encode_batch(texts)] == [e.ids for e in shared.encode_batch(texts)], code
    own = load_language_tokenizer(added, "nn_XX")
    assert load_language_tokenizer(added, "aa_XX").to_str() == shared.to_str()  # no own one: the shared one
    lines = V.training_lines(corpus / "nn_XX.txt", 30)
    ids = np.concatenate([e.ids for e in own.encode_batch(lines, add_special_tokens=False)])
    assert UNK_ID not in ids and (ids >= SHARED).all()
    assert own.token_to_id("<mask>") == shared.token_to_id("<mask>")


def test_old_languages_outputs_and_scores_bit_identical_and_the_new_language_scores_its_rows(base, added, corpus):
    before, after = XmodForMaskedLM.from_pretrained(base).eval(), XmodForMaskedLM.from_pretrained(added).eval()
    valid = validation_batches({c: corpus / f"{c}.txt" for c in OLD}, load_tokenizer(base), OLD, seq_len=32,
                               batch_size=8, valid_lines=30, max_batches=2)
    with torch.no_grad():
        for code, batches in valid.items():
            for batch in batches:
                a, b = before(**batch, output_hidden_states=True), after(**batch, output_hidden_states=True)
                assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states)), code
                assert torch.equal(a.loss, b.loss), code
        own = load_language_tokenizer(added, "nn_XX")
        batch = validation_batches({"nn_XX": corpus / "nn_XX.txt"}, own, ["nn_XX"], seq_len=32, batch_size=8,
                                   valid_lines=30, max_batches=1)["nn_XX"][0]
        batch["lang_ids"] = torch.full_like(batch["lang_ids"], 3)
        out = after(**batch)
        assert (out.logits[:, :SHARED] == float("-inf")).all()
        targets = batch["labels"][batch["labels"] != -100]
        want = torch.nn.functional.cross_entropy(out.logits[:, SHARED:], targets - SHARED)
        assert torch.allclose(out.loss, want)


def test_a_piece_the_shared_vocabulary_has_starts_as_a_copy_of_its_row(base, corpus):
    tok = load_tokenizer(base)
    model = XmodForMaskedLM.from_pretrained(base)
    lines = V.training_lines(corpus / "ll_XX.txt", 30)  # shares a, b, c with the old languages
    own = V.own_tokenizer(tok, lines, 30, SHARED)
    w, bias = model.roberta.embeddings.word_embeddings.weight, model.lm_head.bias
    rows, biases = V.init_own_rows("overlap", w, bias, tok, own.pieces, np.ones(SHARED, dtype=bool))
    shared = [(k, tok.token_to_id(p)) for k, p in enumerate(own.pieces) if tok.token_to_id(p) is not None]
    assert shared and len(shared) < len(own.pieces)
    for k, i in shared:
        assert torch.equal(rows[k], w[i].detach()) and float(biases[k]) == float(bias[i].detach())


def test_a_second_own_addition_keeps_the_first_and_carries_its_tokenizer(added, corpus, tmp_path):
    out = tmp_path / "second"
    assert add(added, corpus, out, "ll_XX", "--max-steps", "2") == 0
    first, second = _results(added), _results(out)
    assert second["old_vocab_size"] == first["vocab_size"] < second["vocab_size"]
    assert (language_tokenizer_dir(out, "nn_XX") / "tokenizer.json").read_text() == \
        (language_tokenizer_dir(added, "nn_XX") / "tokenizer.json").read_text()
    before, after = XmodForMaskedLM.from_pretrained(added).eval(), XmodForMaskedLM.from_pretrained(out).eval()
    assert after.config.vocab_range("nn_XX") == (SHARED, first["vocab_size"])
    assert after.config.vocab_range("ll_XX") == (first["vocab_size"], second["vocab_size"])
    own = load_language_tokenizer(out, "nn_XX")
    batch = validation_batches({"nn_XX": corpus / "nn_XX.txt"}, own, ["nn_XX"], seq_len=32, batch_size=8,
                               valid_lines=30, max_batches=1)["nn_XX"][0]
    batch["lang_ids"] = torch.full_like(batch["lang_ids"], 3)
    with torch.no_grad():
        assert torch.equal(before(**batch).loss, after(**batch).loss)


def test_resume_is_exact(base, corpus, added, tmp_path, monkeypatch):
    interrupt_then_resume(monkeypatch, lambda: add(base, corpus, tmp_path))
    a, b = XmodForMaskedLM.from_pretrained(added), XmodForMaskedLM.from_pretrained(tmp_path)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_transformers_loads_the_checkpoint_and_the_language_tokenizer(added):
    transformers = pytest.importorskip("transformers")
    directory = language_tokenizer_dir(added, "nn_XX")
    hf_tok = transformers.AutoTokenizer.from_pretrained(directory)
    text = "ܐܒ abc ܓܕܗ."
    ids = hf_tok([text], return_tensors="pt")
    assert ids["input_ids"][0].tolist() == load_language_tokenizer(added, "nn_XX").encode(text).ids
    ref = transformers.XmodForMaskedLM.from_pretrained(added).eval()
    ours = XmodForMaskedLM.from_pretrained(added).eval()
    with torch.no_grad():
        want = ref(**ids, lang_ids=torch.tensor([3])).logits
        got = ours(ids["input_ids"], ids["attention_mask"], lang_ids=["nn_XX"]).logits
    # transformers scores every row; ours only the language's own: the same logits there
    assert torch.allclose(want[..., SHARED:], got[..., SHARED:], atol=1e-5)


def test_pipeline_embeddings_and_retrieval_features_use_each_languages_tokenizer(added):
    from xmodlm.embeddings import tokenize
    from xmodlm.pipeline import Pipeline
    from xmodlm.tasks.retrieval import featurize
    from xmodlm.retrieval import Pairs
    pipe = Pipeline.from_pretrained(added)
    text = "ܐܒ abc ܓܕܗ"
    own, shared = load_language_tokenizer(added, "nn_XX"), load_tokenizer(added)
    rows = tokenize(pipe.tokenizer, [text, text], 64, ["nn_XX", "aa_XX"])
    assert rows[0][1:-1] == own.encode(text, add_special_tokens=False).ids
    assert rows[1][1:-1] == shared.encode(text, add_special_tokens=False).ids
    assert min(rows[0][1:-1]) >= SHARED and max(rows[1]) < SHARED
    predictions = pipe.fill_mask(["ܐܒ <mask> ܓܕܗ"], lang="nn_XX", top_k=3)[0][0]
    pieces = json.loads(own.to_str())["model"]["vocab"][SHARED:]
    assert {piece for piece, _ in predictions} <= {piece for piece, _ in pieces}
    assert pipe.encode([text], lang="nn_XX").shape == (1, 32)
    pairs = {"nn_XX": Pairs(keys=["1"], src=[text], tgt=["abc abc"])}
    feature = featurize(pairs, "aa_XX", ["aa_XX", "bb_XX", "cc_XX", "nn_XX"], pipe.tokenizer, 64)[0]
    assert min(feature["input_ids"][1:-1]) >= SHARED and max(feature["pair_input_ids"]) < SHARED


def test_languages_rename_and_remove_carry_the_own_tokenizer_and_rows(added, tmp_path):
    renamed = tmp_path / "renamed"
    assert main(["languages", "rename", "--model", str(added), "--lang", "nn_XX", "--new", "mm_XX",
                 "--out", str(renamed)]) == 0
    assert (language_tokenizer_dir(renamed, "mm_XX") / "tokenizer.json").read_text() == \
        (language_tokenizer_dir(added, "nn_XX") / "tokenizer.json").read_text()
    assert not language_tokenizer_dir(renamed, "nn_XX").exists()
    config = XmodForMaskedLM.from_pretrained(renamed).config
    assert config.vocab_range("mm_XX") == XmodForMaskedLM.from_pretrained(added).config.vocab_range("nn_XX")
    assert main(["languages", "remove", "--model", str(renamed), "--lang", "mm_XX"]) == 0
    assert not language_tokenizer_dir(renamed, "mm_XX").exists()
    assert "mm_XX" not in XmodForMaskedLM.from_pretrained(renamed).config.extra.get("language_vocab_starts", {})


def test_model_tokenizers_load_and_travel_with_the_model(added, base, tmp_path):
    from xmodlm import tokenizer as T
    both = T.load_model_tokenizers(added)
    assert isinstance(both, T.LanguageTokenizers) and set(both.own) == {"nn_XX"}
    assert T.for_language(both, "nn_XX").to_str() == load_language_tokenizer(added, "nn_XX").to_str()
    assert T.for_language(both, "aa_XX").to_str() == T.shared_tokenizer(both).to_str() == load_tokenizer(added).to_str()
    assert not isinstance(T.load_model_tokenizers(base), T.LanguageTokenizers)  # no own one: the shared one alone
    explicit = T.load_model_tokenizers(added, base)  # a --tokenizer the user named serves every language
    assert T.for_language(explicit, "nn_XX").to_str() == load_tokenizer(base).to_str()
    T.save_tokenizers(both, tmp_path)  # what fine-tuning does for the model it writes
    assert T.load_language_tokenizer(tmp_path, "nn_XX").to_str() == both.own["nn_XX"].to_str()


def test_without_its_own_softmax_the_language_scores_every_row_as_transformers_does(base, corpus, tmp_path):
    assert add(base, corpus, tmp_path, "nn_XX", "--no-own-softmax", "--max-steps", "2") == 0
    model = XmodForMaskedLM.from_pretrained(tmp_path).eval()
    assert model.config.vocab_range("nn_XX") == (0, model.config.vocab_size)
    assert all(model.config.vocab_range(code) == (0, SHARED) for code in OLD)  # the old languages keep theirs
    transformers = pytest.importorskip("transformers")
    ids = load_language_tokenizer(tmp_path, "nn_XX").encode("ܐܒ abc ܓܕܗ.").ids
    with torch.no_grad():
        want = transformers.XmodForMaskedLM.from_pretrained(tmp_path).eval()(
            torch.tensor([ids]), lang_ids=torch.tensor([3])).logits
        got = model(torch.tensor([ids]), lang_ids=["nn_XX"]).logits
    assert torch.allclose(want, got, atol=1e-5)
