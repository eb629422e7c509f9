"""Sentence embeddings (xmodlm.embeddings), retrieval search and scores (xmodlm.retrieval), and the retrieval task's
recipes: evaluate per layer, contrastive fine-tuning with the paper's protocol, xmodlm embed, Pipeline.encode."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny import ours

from xmodlm import embeddings as emb
from xmodlm import retrieval as ret
from xmodlm.cli import main
from xmodlm.config import preset
from xmodlm.model import XmodForMaskedLM, is_embedding_or_module_param
from xmodlm.pipeline import Pipeline
from xmodlm.recipes import evaluate as ev
from xmodlm.recipes import finetune as ft
from xmodlm.synthetic import SyntheticWorld
from xmodlm.tasks import inputs
from xmodlm.tokenizer import save_tokenizer, train_tokenizer
from xmodlm.trainer import TrainConfig, Trainer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYN = ["syn00", "syn01", "syn02"]


# ---------------------------------------------------------------- embeddings


def _rows(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[0, *torch.randint(5, 100, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist(), 2]
            for _ in range(n)]


def test_pooling_mean_skips_padding_and_cls_takes_the_first_state():
    h = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(emb.pool(h, mask, "mean")[0], h[0, :2].mean(0))
    assert torch.equal(emb.pool(h, mask, "mean")[1], h[1].mean(0))
    assert torch.equal(emb.pool(h, mask, "cls"), h[:, 0])
    with pytest.raises(ValueError, match="pooling 'max'"):
        emb.pool(h, mask, "max")


def test_layers_resolve_from_either_end_and_default_to_the_middle():
    config = preset("tiny", num_hidden_layers=4)
    assert emb.resolve_layer(None, config) == emb.default_layer(config) == 2
    assert emb.resolve_layer(-1, config) == 4 and emb.resolve_layer(0, config) == 0
    assert emb.resolve_layer(-5, config) == 0
    assert emb.default_layer(preset("tiny", num_hidden_layers=12)) == 6
    with pytest.raises(ValueError, match="layers 0 \\(embeddings\\) to 4"):
        emb.resolve_layer(5, config)


def test_embed_ids_matches_one_text_at_a_time_whatever_the_batching():
    model = ours()
    rows, langs = _rows(), ["en_XX", "de_DE", "fr_XX", "en_XX", "fr_XX", "de_DE", "en_XX"]
    got = emb.embed_ids(model, rows, langs, layers=[1, -1, 0], batch_size=3)
    assert got.shape == (3, 7, 32)
    assert torch.allclose(got.norm(dim=-1), torch.ones(3, 7), atol=1e-6)
    for i, (row, lang) in enumerate(zip(rows, langs)):
        out = model.roberta(torch.tensor([row]), lang_ids=[lang], output_hidden_states=True)
        for j, layer in enumerate([1, 2, 0]):
            assert torch.allclose(got[j, i], F.normalize(out.hidden_states[layer][0].mean(0), dim=0), atol=1e-5)
    assert torch.allclose(emb.embed_ids(model, rows, langs, layers=[1], batch_size=7), got[:1], atol=1e-5)
    raw = emb.embed_ids(model, rows, "en_XX", layers=[-1], normalize=False, pooling="cls")[0]
    assert torch.allclose(raw[0], model.roberta(torch.tensor([rows[0]]), lang_ids="en_XX").last_hidden_state[0, 0],
                          atol=1e-5)


def test_bf16_embeddings_stay_close_to_fp32():
    model = ours()
    rows = _rows(16, seed=1)
    fp32 = emb.embed_ids(model, rows, "de_DE", layers=[1])[0]
    bf16 = emb.embed_ids(model, rows, "de_DE", layers=[1], precision="bf16")[0]
    assert bf16.dtype == torch.float32
    assert float((fp32 * bf16).sum(-1).min()) > 0.999
    with pytest.raises(ValueError, match="precision 'fp16'"):
        emb.embed_ids(model, rows, "de_DE", precision="fp16")


# ---------------------------------------------------------------- parallel files


def _write(path: Path, lines) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_line_aligned_files_pair_by_line_and_drop_blank_pairs(tmp_path):
    a = _write(tmp_path / "xx-en.xx", ["eins", "", "drei"])
    b = _write(tmp_path / "xx-en.en", ["one", "two", "three"])
    pairs = ret.read_pairs(a, b)
    assert (pairs.keys, pairs.src, pairs.tgt) == (["1", "3"], ["eins", "drei"], ["one", "three"])
    _write(b, ["one"])
    with pytest.raises(ValueError, match="3 lines .* 1"):
        ret.read_pairs(a, b)


def test_id_aligned_files_pair_by_id_whatever_the_line_numbers(tmp_path):
    a = _write(tmp_path / "aaa.txt", ["a1", "a2", "a3", "a4", "a5"])
    _write(tmp_path / "aaa.ids", ["v1", "v2", "v3", "v3", "v5"])  # v3 twice: left out
    b = _write(tmp_path / "bbb.txt", ["b5", "b1", "b2", "b9"])
    _write(tmp_path / "bbb.ids", ["v5", "v1", "v2", "v9"])
    pairs = ret.read_pairs(a, b)
    assert (pairs.keys, pairs.src, pairs.tgt) == (["v1", "v2", "v5"], ["a1", "a2", "a5"], ["b1", "b2", "b5"])
    c = _write(tmp_path / "ccc.en", ["x"] * 5)
    with pytest.raises(ValueError, match="id-aligned .* no ids file"):
        ret.read_pairs(a, c)
    _write(tmp_path / "aaa.ids", ["v1"])
    with pytest.raises(ValueError, match="1 ids for the 5 lines"):
        ret.read_side(a)


def test_bible_files_align_by_verse_id():
    bible = DATA / "bible"
    if not (bible / "acu_Latn.ids").is_file():
        pytest.skip(f"real data absent: {bible} (see the README's tests section)")
    pairs = ret.read_pairs(bible / "acu_Latn.txt", bible / "agr_Latn.txt")
    ids = {}
    for code in ("acu_Latn", "agr_Latn"):
        lines = (bible / f"{code}.ids").read_text(encoding="utf-8").split()
        ids[code] = set(lines)
    assert len(pairs) <= len(ids["acu_Latn"] & ids["agr_Latn"]) and len(pairs) > 7000
    acu = dict(zip((bible / "acu_Latn.ids").read_text(encoding="utf-8").split("\n"),
                   (bible / "acu_Latn.txt").read_text(encoding="utf-8").split("\n")))
    assert all(acu[k] == s for k, s in zip(pairs.keys[:50], pairs.src[:50]))


# ---------------------------------------------------------------- search and scores


def _unit(n, d=16, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_knn_in_chunks_is_the_full_search():
    q, k = _unit(50), _unit(40, seed=1)
    s, i = ret.knn(q, k, 5, chunk=7)
    full = (q @ k.T).topk(5)
    assert torch.equal(i, full.indices) and torch.allclose(s, full.values)


def test_faiss_finds_the_same_neighbours_and_scores_as_torch():
    pytest.importorskip("faiss", reason="faiss is optional (pip install faiss-cpu); torch search is tested anyway")
    src = _unit(300, 32, seed=2)
    tgt = F.normalize(src + 0.8 * _unit(300, 32, seed=3), dim=-1)
    s1, i1 = ret.knn(src, tgt, 10, "torch")
    s2, i2 = ret.knn(src, tgt, 10, "faiss")
    assert torch.equal(i1, i2) and torch.allclose(s1, s2, atol=1e-5)
    for scoring in ret.SCORINGS:
        assert ret.scores(src, tgt, scoring=scoring, search="torch") == ret.scores(src, tgt, scoring=scoring,
                                                                                     search="faiss")


def test_search_auto_falls_back_to_torch_and_faiss_without_it_is_an_error(monkeypatch):
    monkeypatch.setattr(ret, "faiss_available", lambda: False)
    assert ret.resolve_search("auto") == "torch"
    with pytest.raises(ValueError, match="pip install faiss-cpu"):
        ret.resolve_search("faiss")
    with pytest.raises(ValueError, match="search 'annoy'"):
        ret.resolve_search("annoy")


def test_margin_reranks_by_the_ratio_margin():
    src, tgt = _unit(30, seed=4), _unit(30, seed=5)
    k = 3
    sims = src @ tgt.T
    fwd = sims.topk(k, dim=1).values.mean(1)
    bwd = sims.T.topk(k, dim=1).values.mean(1)
    margin = sims / ((fwd[:, None] + bwd[None, :]) / 2)  # every candidate: 30 < the 32 re-ranked ones
    expected = margin.argsort(dim=1, descending=True)[:, :5]
    assert torch.equal(ret.rank(src, tgt, 5, "margin", margin_k=k), expected)
    assert torch.equal(ret.rank(src, tgt, 5, "cosine"), sims.argsort(dim=1, descending=True)[:, :5])


def test_accuracy_counts_the_translation_among_the_first_k():
    ranked = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 2]])
    assert ret.accuracy_at(ranked, (1, 2, 3)) == {1: pytest.approx(100 / 3), 2: pytest.approx(200 / 3), 3: 100.0}
    x = _unit(20)
    assert ret.scores(x, x) == {name: 100.0 for name in ret.metric_names()}


def test_info_nce_is_symmetric_cross_entropy_and_masks_repeated_sentences():
    a, b = _unit(4, seed=6), _unit(4, seed=7)
    loss, logits = ret.info_nce(a, b, 0.1)
    labels = torch.arange(4)
    manual = (F.cross_entropy(a @ b.T / 0.1, labels) + F.cross_entropy(b @ a.T / 0.1, labels)) / 2
    assert torch.allclose(loss, manual)
    _, masked = ret.info_nce(a, b, 0.1, keys=torch.tensor([0, 1, 0, 2]))
    assert masked[0, 2] == float("-inf") and masked[2, 0] == float("-inf") and torch.isfinite(masked.diagonal()).all()


def test_contrastive_training_moves_only_the_shared_weights():
    torch.manual_seed(0)
    model = ret.ContrastiveModel(ours(), layer=1, temperature=0.05)
    assert list(model.state_dict()) == list(model.model.state_dict())
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    rows = _rows(8, seed=3)
    src, tgt = inputs(rows), inputs([r[::-1] for r in rows])
    batch = {**src, "lang_ids": torch.tensor([0, 1] * 4), "pair_input_ids": tgt["input_ids"],
             "pair_attention_mask": tgt["attention_mask"], "pair_lang_ids": torch.full((8,), 2),
             "keys": torch.arange(8)}
    trainer = Trainer(model, TrainConfig(max_steps=2, lr=1e-2, precision="fp32", device="cpu", save_every=0,
                                         tensorboard=False, out_dir="/nonexistent/unused"),
                      iter([batch, batch]), trainable=ft.trainable_filter(False))
    for _ in range(2):
        trainer._train_step()
    moved = {n for n, p in model.model.named_parameters() if not torch.equal(p, before[n])}
    frozen = {n for n in before if is_embedding_or_module_param(n)}
    assert moved and not moved & frozen
    assert any(".attention." in n for n in moved)


# ---------------------------------------------------------------- recipes, on synthetic parallel text


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("retrieval")
    w = SyntheticWorld(0)
    corpora = w.write_corpora(root / "corpora", SYN, n_sentences=200)
    tok = train_tokenizer(corpora, vocab_size=300, progress=False)
    torch.manual_seed(0)
    XmodForMaskedLM(preset("tiny", vocab_size=tok.get_vocab_size(), languages=SYN)).save_pretrained(root / "pre")
    save_tokenizer(tok, root / "pre")
    meanings = w.sample_meanings(60, seed=5)
    paths = {"root": root, "model": root / "pre"}
    for code in SYN:
        paths[code] = _write(root / f"par.{code}", [w.realise(m, code) for m in meanings])
    return paths


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _evaluate(world, model, out, **kw):
    s = ev.EvaluateSettings(model=str(model), task="retrieval", out_dir=str(out), device="cpu",
                            data=[f"{c}={world[c]}" for c in SYN], **kw)
    return ev.run(s)


def test_evaluate_scores_every_pair_with_the_pivot_at_every_layer(world, tmp_path, capsys):
    results = _evaluate(world, world["model"], tmp_path / "ev", eval_limit=50, search="torch")
    assert results["pivot"] == "syn02" and results["layer"] == 1 and set(results["languages"]) == {"syn00", "syn01"}
    row = results["languages"]["syn00"]
    assert row["examples"] == 50 and set(row["layers"]) == {0, 1, 2}
    assert {k: row[k] for k in ret.metric_names()} == row["layers"][1]
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert saved["languages"]["syn01"]["acc@1"] == results["languages"]["syn01"]["acc@1"]
    printed = capsys.readouterr().out
    assert "accuracy@1 by layer" in printed and "1*" in printed
    margin = _evaluate(world, world["model"], tmp_path / "ev2", scoring="margin", pivot="syn00", per_layer=False,
                       layer=-1)
    assert margin["pivot"] == "syn00" and margin["layer"] == 2 and "layers" in margin["languages"]["syn01"]
    with pytest.raises(ValueError, match="--pivot 'en_XX'"):
        _evaluate(world, world["model"], tmp_path / "ev3", pivot="en_XX")


def test_contrastive_finetune_then_zero_shot_evaluation(world, tmp_path):
    out = tmp_path / "ft"
    s = ft.FinetuneSettings(model=str(world["model"]), task="retrieval", out_dir=str(out), max_steps=3,
                            batch_size=8, lr=1e-3, train=[f"syn00={world['syn00']}", f"syn02={world['syn02']}"],
                            layer=2, device="cpu", precision="fp32", tensorboard=False)
    result = ft.run(s)
    info = json.loads((out / "task.json").read_text())
    assert info["task"] == "retrieval" and info["retrieval"]["layer"] == 2 and info["retrieval"]["pivot"] == "syn02"
    trained, pre = XmodForMaskedLM.from_pretrained(out), XmodForMaskedLM.from_pretrained(world["model"])
    before = dict(pre.named_parameters())
    for name, p in trained.named_parameters():
        assert torch.equal(p, before[name]) == (is_embedding_or_module_param(name) or name.startswith("lm_head")), name
    assert result["trainable_parameters"] < result["parameters"]
    # syn01 was never trained on: evaluated zero-shot, at the fine-tuned layer by default
    results = ev.run(ev.EvaluateSettings(model=str(out), out_dir=str(tmp_path / "ev"), device="cpu",
                                         data=[f"syn01={world['syn01']}", f"syn02={world['syn02']}"]))
    assert results["task"] == "retrieval" and results["layer"] == 2
    with pytest.raises(ValueError, match="at least two"):
        ft.run(ft.FinetuneSettings(model=str(world["model"]), task="retrieval", train=[f"syn00={world['syn00']}"]))


def test_contrastive_finetune_resumes_exactly(world, tmp_path, monkeypatch):
    def run(out):
        return ft.run(ft.FinetuneSettings(model=str(world["model"]), task="retrieval", out_dir=str(tmp_path / out),
                                          max_steps=4, batch_size=8, lr=1e-3, save_every=2, device="cpu",
                                          train=[f"syn01={world['syn01']}", f"syn00={world['syn00']}"],
                                          precision="fp32", tensorboard=False))

    run("straight")
    original = Trainer._train_step

    def killed_after_step_2(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", killed_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        run("resumed")
    monkeypatch.setattr(Trainer, "_train_step", original)
    assert run("resumed")["metrics"]["step"] == 4
    assert json.loads((tmp_path / "resumed" / "task.json").read_text())["retrieval"]["pivot"] == "syn00"
    resumed, straight = (dict(XmodForMaskedLM.from_pretrained(tmp_path / d).named_parameters())
                         for d in ("resumed", "straight"))
    assert all(torch.equal(p, straight[name]) for name, p in resumed.items())  # weights, optimizer, data order


def test_embed_writes_npy_arrays_with_line_ids(world, tmp_path):
    out = tmp_path / "emb"
    assert main(["embed", "--model", str(world["model"]), "--data", f"syn00={world['syn00']}", "--out", str(out),
                 "--layer", "-1", "--batch-size", "7"]) == 0
    array = np.load(out / "syn00.npy")
    assert array.shape == (60, 32) and array.dtype == np.float32
    assert (out / "syn00.ids.txt").read_text().split() == [str(i) for i in range(1, 61)]
    pipe = Pipeline.from_pretrained(world["model"])
    texts = world["syn00"].read_text(encoding="utf-8").splitlines()
    expected = pipe.encode(texts, lang="syn00", layer=-1)
    assert np.allclose(array, expected.numpy(), atol=1e-5)
    assert json.loads((out / "embeddings.json").read_text())["layer"] == 2


def test_pipeline_encode_takes_text_and_tokenize_keeps_the_old_ids(world):
    pipe = Pipeline.from_pretrained(world["model"])
    texts = world["syn01"].read_text(encoding="utf-8").splitlines()[:5]
    vectors = pipe.encode(texts, lang="syn01", batch_size=2)
    assert vectors.shape == (5, 32) and torch.allclose(vectors.norm(dim=-1), torch.ones(5), atol=1e-6)
    batch = pipe.tokenize(texts)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and int(batch["input_ids"][0, 0]) == 0
    h = pipe.model.roberta(**batch, lang_ids="syn01").last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(pipe.embed(texts, lang="syn01"), (h * mask).sum(1) / mask.sum(1), atol=1e-5)
    cls = pipe.encode(texts, lang="syn01", layer=0, pooling="cls", normalize=False)
    assert torch.allclose(cls, pipe.model.roberta(**batch, lang_ids="syn01", output_hidden_states=True)
                          .hidden_states[0][:, 0], atol=1e-5)


def test_retrieval_experiment_runs_both_models_before_and_after_and_resumes(tmp_path):
    from xmodlm.recipes import retrieval_experiment as rx

    w = SyntheticWorld(0)
    data = tmp_path / "data"
    data.mkdir()
    meanings = w.sample_meanings(120, seed=3)
    for code in SYN:
        _write(data / f"{code}.txt", [w.realise(m, code) for m in meanings])
    s = rx.RetrievalExperimentSettings(
        data=str(data), languages=list(SYN), pivot="syn02", finetune=["syn00"], out_dir=str(tmp_path / "out"),
        seeds=[0], preset="tiny", hidden_size=32, num_hidden_layers=2, vocab_size=200, seq_len=32, batch_size=4,
        max_steps=3, valid_lines=20, eval_limit=40, finetune_range="50:", finetune_steps=2, finetune_batch_size=8,
        device="cpu")
    results = rx.run(s)
    assert results["zero_shot"] == ["syn01"] and results["layer"] == 1
    for model in rx.MODELS:
        for when in ("before", "after"):
            assert set(results["acc@1"][model][when]) == {"syn00", "syn01", "zero-shot mean"}
    assert json.loads((tmp_path / "out" / "runs" / "shared-s0" / "config.json").read_text())["shared_module"]
    assert set(results["acc@1"]["untrained"]["before"]) == {"syn00", "syn01", "zero-shot mean"}
    untrained = tmp_path / "out" / "runs" / "untrained-s0"
    assert XmodForMaskedLM.from_pretrained(untrained).config.hidden_size == 32
    assert (untrained / "tokenizer.json").is_file()
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "| syn01 | zero-shot |" in report_md and "| untrained |" in report_md
    assert rx.run(s)["acc@1"] == json.loads((tmp_path / "out" / "results.json").read_text())["acc@1"]  # all skipped
    with pytest.raises(ValueError, match="shares 10 pairs"):
        rx.run(dataclasses.replace(s, finetune_range="30:"))
