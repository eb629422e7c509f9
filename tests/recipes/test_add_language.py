"""add-language --vocabulary extend: vocabulary extension and never-seen rows, run for real on a tiny model pre-trained on small
synthetic corpora: what trains and what stays bit-identical, the saved tokenizer and counts, transformers parity,
exact resume, the fallback without counts, and the change of the old languages' full-softmax MLM loss."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodlm import vocab as V
from xmodlm.cli import main
from xmodlm.data import validation_batches
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes import add_language
from xmodlm.tokenizer import UNK_ID, load_tokenizer

OLD = ["aa_XX", "bb_XX", "cc_XX"]
ALPHABETS = {"aa_XX": "abcdefgé", "bb_XX": "hijklmnab", "cc_XX": "абвгдежa", "nn_XX": "ܐܒܓܕܗܘabc", "ll_XX": "abcɛɔܐ"}
COMMON = ["--seq-len", "32", "--batch-size", "8", "--valid-lines", "30", "--valid-batches", "1", "--seed", "0",
          "--log-every", "1", "--precision", "fp32"]


def write_corpus(directory: Path, n=300, seed=0) -> Path:
    rnd = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for code, letters in ALPHABETS.items():
        lines = [" ".join("".join(rnd.choices(letters, k=rnd.randint(1, 6))) for _ in range(rnd.randint(3, 10)))
                 + "." for _ in range(n)]
        (directory / f"{code}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    assert main(["pretrain", "--data", str(corpus), "--languages", ",".join(OLD), "--out", str(out),
                 "--max-steps", "8", "--vocab-size", "220", "--lr", "2e-3", *COMMON]) == 0
    return out


def add(pretrained, corpus, out, *extra) -> int:
    return main(["add-language", "--model", str(pretrained), "--lang", "nn_XX", "--data", str(corpus / "nn_XX.txt"),
                 "--out", str(out), "--max-steps", "4", "--save-every", "2", "--lr", "1e-2", "--extend-vocab", "40",
                 "--vocabulary", "extend", *COMMON, *extra])


@pytest.fixture(scope="module")
def base(pretrained, corpus, tmp_path_factory) -> Path:
    """The pre-trained model with the counts of three rows the new language uses set to 0: eight steps of
    pre-training happen to see every such row, and the test needs some never-seen ones."""
    out = tmp_path_factory.mktemp("base")
    shutil.copytree(pretrained, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint*"))
    counts, sources = V.read_counts(out, 220)
    lines = V.training_lines(corpus / "nn_XX.txt", 30)
    nn = V.count_ids(load_tokenizer(out), lines, 220)
    nn[:4] = nn[-1] = 0
    rare = [i for i in np.argsort(counts) if nn[i] > 0][:3]  # the rarest in pre-training: few old lines hold them
    counts[rare] = 0
    V.write_counts(out, counts, sources)
    return out


@pytest.fixture(scope="module")
def added(base, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("added")
    assert add(base, corpus, out) == 0
    return out


def test_pretraining_records_exact_row_counts(pretrained):
    counts, sources = V.read_counts(pretrained, 220)
    assert sources[0]["what"] == "pretrain" and sources[0]["steps"] == 8
    assert counts.sum() == 8 * 8 * 32  # every token of every row of every batch, <s> and </s> included
    assert counts[0] == 8 * 8 and counts[2] > 8 * 8 and counts[1] == 0  # <s> starts every row, </s> ends rows and lines


def test_new_rows_and_never_seen_rows_train_and_nothing_else(base, added):
    results = json.loads((added / "results.json").read_text())
    n_old, n_new = results["old_vocab_size"], results["vocab_size"]
    assert n_old == 220 and n_new == 220 + results["added_pieces"] and results["added_pieces"] >= 6
    assert results["unk_rate_before"] > 0.3 and results["unk_rate_after"] == 0
    assert results["embed_init"] == "overlap" and results["unseen_rows_trained"] == 3
    assert 0 < results["eval/bits_per_char"] < 20
    before, after = XmodForMaskedLM.from_pretrained(base).eval(), XmodForMaskedLM.from_pretrained(added).eval()
    counts, sources = V.read_counts(base, n_old)
    new_counts, new_sources = V.read_counts(added, n_new)
    assert new_sources[:1] == sources and new_sources[1]["language"] == "nn_XX"
    assert np.array_equal(new_counts[:n_old] >= counts, np.ones(n_old, bool)) and new_counts[n_old:].sum() > 0
    old = before.state_dict()
    unseen = []
    for name, tensor in after.state_dict().items():
        if ".adapter_modules.nn_XX." in name:
            continue
        if name in (V.EMBEDDING, V.LM_BIAS, "lm_head.decoder.weight", "lm_head.decoder.bias"):
            rows = tensor[:n_old]
            same = (rows == old[name]).reshape(n_old, -1).all(1).numpy()
            assert same[counts > 0].all(), name  # every row seen in pre-training is bit-identical
            unseen.append(~same)
            continue
        assert torch.equal(tensor, old[name]), f"{name} changed"
    assert unseen[0].sum() == results["unseen_rows_trained"]
    assert not (unseen[0] & (counts > 0)).any()


def test_old_languages_encoder_outputs_and_old_logits_are_bit_identical(base, added, corpus):
    old_tok, new_tok = load_tokenizer(base), load_tokenizer(added)
    before, after = XmodForMaskedLM.from_pretrained(base).eval(), XmodForMaskedLM.from_pretrained(added).eval()
    counts, _ = V.read_counts(base, 220)
    trained = (counts == 0) & (V.count_ids(old_tok, V.training_lines(corpus / "nn_XX.txt", 30), 220) > 0)
    trained[:4] = False  # the special tokens never train (<unk> has count 0 here)
    assert trained.sum() == 3
    for code in OLD:
        texts = (corpus / f"{code}.txt").read_text(encoding="utf-8").splitlines()[-30:]
        # text the old vocabulary covers, without the never-seen rows that the addition trained: the same ids
        texts = [t for t, e in zip(texts, old_tok.encode_batch(texts))
                 if UNK_ID not in e.ids and not trained[e.ids].any()]
        encs = old_tok.encode_batch(texts)
        assert len(encs) > 10 and [e.ids for e in encs] == [e.ids for e in new_tok.encode_batch(texts)]
        ids = torch.tensor([e.ids[:20] for e in encs if len(e.ids) >= 20][:8])
        with torch.no_grad():
            a = before(ids, lang_ids=code, output_hidden_states=True)
            b = after(ids, lang_ids=code, output_hidden_states=True)
        assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states)), code
        keep = torch.from_numpy(~trained)  # the logits of every old row but the three trained ones
        assert torch.equal(a.logits[..., keep], b.logits[..., :220][..., keep]), code
        assert (b.logits[..., 220:] == float("-inf")).all()  # the new rows are not in an old language's softmax
    assert after.config.extra["language_vocab_sizes"] == {code: 220 for code in OLD}


def test_saved_tokenizer_and_checkpoint_load_in_transformers(added):
    transformers = pytest.importorskip("transformers")
    results = json.loads((added / "results.json").read_text())
    hf_tok = transformers.AutoTokenizer.from_pretrained(added)
    assert len(hf_tok) == results["vocab_size"]
    text = "ܐܒ abc ܓܕܗ."
    ids = hf_tok([text], return_tensors="pt")
    assert ids["input_ids"][0].tolist() == load_tokenizer(added).encode(text).ids
    assert UNK_ID not in ids["input_ids"][0].tolist() and ids["input_ids"].max() >= results["old_vocab_size"]
    ref, info = transformers.XmodForMaskedLM.from_pretrained(added, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ours = XmodForMaskedLM.from_pretrained(added).eval()
    with torch.no_grad():
        want = ref.eval()(**ids, lang_ids=torch.tensor([3])).logits
        got = ours(ids["input_ids"], ids["attention_mask"], lang_ids=["nn_XX"]).logits
    assert torch.allclose(want, got, atol=1e-5)


def interrupt_then_resume(monkeypatch, run) -> None:
    """``run()`` (an add-language CLI call) stopped by Ctrl-C at the batch of step 4 (steps 1-2 are saved), then
    ``run()`` again to the end."""
    calls = {"n": 0}
    real = add_language.ConstantLanguage.__next__

    def failing(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(add_language.ConstantLanguage, "__next__", failing)
    assert run() == 130
    monkeypatch.setattr(add_language.ConstantLanguage, "__next__", real)
    assert run() == 0


def test_resume_is_exact(base, corpus, added, tmp_path, monkeypatch):
    interrupt_then_resume(monkeypatch, lambda: add(base, corpus, tmp_path))
    a, b = XmodForMaskedLM.from_pretrained(added), XmodForMaskedLM.from_pretrained(tmp_path)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    n = json.loads((added / "results.json").read_text())["vocab_size"]
    assert np.array_equal(V.read_counts(added, n)[0], V.read_counts(tmp_path, n)[0])
    assert (added / "tokenizer.json").read_text() == (tmp_path / "tokenizer.json").read_text()


def test_without_counts_only_new_rows_train(pretrained, corpus, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(pretrained, base, ignore=shutil.ignore_patterns("checkpoint*", V.COUNTS_NAME))
    out = tmp_path / "out"
    assert add(base, corpus, out, "--embed-init", "script", "--max-steps", "2") == 0
    assert "never-seen rows train too (no vocab_counts.json: only new rows train)" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["unseen_rows_trained"] == 0 and not (out / V.COUNTS_NAME).exists()
    before, after = XmodForMaskedLM.from_pretrained(base), XmodForMaskedLM.from_pretrained(out)
    emb = after.roberta.embeddings.word_embeddings.weight
    assert torch.equal(emb[:220], before.roberta.embeddings.word_embeddings.weight)


def test_extension_off_keeps_the_vocabulary(pretrained, corpus, tmp_path, capsys):
    assert add(pretrained, corpus, tmp_path, "--extend-vocab", "0", "--no-train-unseen-rows",
               "--max-steps", "1") == 0
    assert "vocabulary: unchanged (extension off; 220 ids)" in capsys.readouterr().out
    assert XmodForMaskedLM.from_pretrained(tmp_path).config.vocab_size == 220


def test_old_languages_full_softmax_loss_moves_little_and_untouched_rows_score_exactly(base, added, corpus):
    """Measured, not kept exact: the old languages' MLM softmax gains the new rows (and the never-seen rows moved).
    Over the rows the addition left alone, their scores are the same bit for bit."""
    tok = load_tokenizer(base)
    before, after = XmodForMaskedLM.from_pretrained(base).eval(), XmodForMaskedLM.from_pretrained(added).eval()
    counts, _ = V.read_counts(base, 220)
    trained = (counts == 0) & (V.count_ids(tok, V.training_lines(corpus / "nn_XX.txt", 30), 220) > 0)
    trained[:4] = False
    keep = torch.from_numpy(~trained)
    index = torch.cumsum(keep.long(), 0) - 1  # old id -> column among the kept rows
    valid = validation_batches({c: corpus / f"{c}.txt" for c in OLD}, tok, OLD, seq_len=32, batch_size=8,
                               valid_lines=30, max_batches=2)
    changes, checked = [], 0
    for code, batches in valid.items():
        for batch in batches:
            with torch.no_grad():
                a, b = before(**batch), after(**batch)
            changes.append(float(b.loss - a.loss))
            rows = keep[batch["input_ids"]].all(1)  # rows whose inputs hold no trained row
            batch = {k: v[rows] for k, v in batch.items()}
            targets = batch["labels"][batch["labels"] >= 0]
            if not targets.numel():
                continue
            with torch.no_grad():
                a, b = before(**batch), after(**batch)
            ok = keep[targets]
            exact = [torch.nn.functional.cross_entropy(x[ok][:, keep], index[targets[ok]])
                     for x in (a.logits, b.logits[:, :220])]
            assert torch.equal(*exact), code
            checked += int(ok.sum())
    assert checked > 20 and max(abs(c) for c in changes) < 1.0, (checked, changes)



def test_without_trained_old_rows_the_old_languages_mlm_loss_is_bit_identical(pretrained, corpus, tmp_path):
    assert add(pretrained, corpus, tmp_path, "--no-train-unseen-rows", "--max-steps", "2") == 0
    tok = load_tokenizer(pretrained)
    before, after = XmodForMaskedLM.from_pretrained(pretrained).eval(), XmodForMaskedLM.from_pretrained(tmp_path).eval()
    assert after.config.vocab_size > 220
    valid = validation_batches({c: corpus / f"{c}.txt" for c in OLD}, tok, OLD, seq_len=32, batch_size=8,
                               valid_lines=30, max_batches=2)
    for code, batches in valid.items():
        for batch in batches:
            with torch.no_grad():
                assert torch.equal(before(**batch).loss, after(**batch).loss), code


def test_a_second_addition_keeps_the_first_ones_rows_and_scores(added, corpus, tmp_path):
    out = tmp_path / "second"
    assert main(["add-language", "--model", str(added), "--lang", "ll_XX", "--data", str(corpus / "ll_XX.txt"),
                 "--out", str(out), "--max-steps", "2", "--lr", "1e-2", "--extend-vocab", "30", *COMMON,
                 "--no-train-unseen-rows", "--vocabulary", "extend"]) == 0
    first, second = json.loads((added / "results.json").read_text()), json.loads((out / "results.json").read_text())
    assert second["old_vocab_size"] == first["vocab_size"] < second["vocab_size"]
    before, after = XmodForMaskedLM.from_pretrained(added).eval(), XmodForMaskedLM.from_pretrained(out).eval()
    sizes = after.config.extra["language_vocab_sizes"]
    assert sizes == {**{code: 220 for code in OLD}, "nn_XX": first["vocab_size"]}
    counts, sources = V.read_counts(out, second["vocab_size"])
    assert [s.get("language") for s in sources] == [None, "nn_XX", "ll_XX"]
    n = first["vocab_size"]
    emb_before = before.roberta.embeddings.word_embeddings.weight
    emb_after = after.roberta.embeddings.word_embeddings.weight[:n]
    assert torch.equal(emb_before, emb_after) and second["unseen_rows_trained"] == 0
    assert (counts[:n] >= V.read_counts(added, n)[0]).all()  # carried: the first addition's rows count as seen
    tok = load_tokenizer(added)
    valid = validation_batches({"nn_XX": corpus / "nn_XX.txt"}, tok, ["nn_XX"], seq_len=32, batch_size=8,
                               valid_lines=30, max_batches=1)
    batch = valid["nn_XX"][0]
    batch["lang_ids"] = torch.full_like(batch["lang_ids"], 3)
    with torch.no_grad():  # nn_XX's masked-LM scores do not see ll_XX's rows
        assert torch.equal(before(**batch).loss, after(**batch).loss)


def test_languages_commands_carry_the_counts(base, tmp_path):
    assert main(["languages", "rename", "--model", str(base), "--lang", "aa_XX", "--new", "aa_YY",
                 "--out", str(tmp_path)]) == 0
    assert np.array_equal(V.read_counts(tmp_path, 220)[0], V.read_counts(base, 220)[0])
