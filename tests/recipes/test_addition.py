"""``xmodlm experiment addition``: the language rule on the bible corpus, and a seconds-long run on 150 verses of
six bible languages (tokenizers, base, joint, three additions, scores, resume)."""

import json
import math
import shutil
from pathlib import Path

import pytest

from xmodlm import tokenizer as tok_mod
from xmodlm import vocab as vocab_mod
from xmodlm.cli import main
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes import addition

BIBLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "bible"
needs_bible = pytest.mark.skipif(not (BIBLE / "languages.tsv").is_file(), reason=f"no bible corpus at {BIBLE}")
MINI = ("acu_Latn", "agr_Latn", "ake_Latn", "jiv_Latn", "guj_Gujr", "ukr_Cyrl")
QUICK = ["experiment", "addition", "--joint-vocab-arm", "--init-arms", "mean:nocopy", "--all-rows-arm", "--k", "2", "--steps-per-language", "2", "--seeds", "0", "--vocab-size", "300",
         "--seq-len", "32", "--batch-size", "4", "--valid-lines", "30", "--valid-batches", "2", "--log-every", "1"]


def test_default_rule_on_the_bible_corpus():
    if not (BIBLE / "languages.tsv").is_file():
        pytest.skip(f"no bible corpus at {BIBLE}")
    plan = addition.make_plan(addition.AdditionSettings(data=str(BIBLE)))
    assert plan.order == ["acu_Latn", "agr_Latn", "ake_Latn", "amu_Latn", "bsn_Latn", "cak_Latn", "cha_Latn",
                          "chq_Latn"]
    # jac_Latn is Mayan like cak_Latn; cjp_Latn (Chibchan) has no relative; Gujarati script is new.
    assert plan.heldout == {"related": "jac_Latn", "unrelated": "cjp_Latn", "script": "guj_Gujr"}
    assert plan.init_from["related"] == ["cak_Latn"] and plan.init_from["script"] == plan.order


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    if not (BIBLE / "languages.tsv").is_file():
        pytest.skip(f"no bible corpus at {BIBLE}")
    data = tmp_path_factory.mktemp("bible-mini")
    for code in MINI:
        lines = (BIBLE / f"{code}.txt").read_text(encoding="utf-8").splitlines()[:150]
        (data / f"{code}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(BIBLE / "languages.tsv", data)
    return data


def test_plan_overrides_and_errors(mini):
    plan = addition.make_plan(addition.AdditionSettings(data=str(mini), k=2))
    assert plan.heldout == {"related": "jiv_Latn", "unrelated": "ake_Latn", "script": "guj_Gujr"}
    assert plan.init_from["related"] == ["acu_Latn"]
    chosen = addition.make_plan(addition.AdditionSettings(data=str(mini), k=2, init_from="related=agr_Latn",
                                                          heldout="unrelated=ake_Latn"))
    assert chosen.init_from["related"] == ["agr_Latn"]
    with pytest.raises(ValueError, match="role=CODE"):
        addition.make_plan(addition.AdditionSettings(data=str(mini), heldout="jiv_Latn"))
    with pytest.raises(ValueError, match="must not be a pre-training"):
        addition.make_plan(addition.AdditionSettings(data=str(mini), k=2, heldout="related=acu_Latn"))
    with pytest.raises(ValueError, match="not pre-training languages"):
        addition.make_plan(addition.AdditionSettings(data=str(mini), k=2, init_from="script=jiv_Latn"))


@pytest.fixture(scope="module")
def done(mini, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("addition")
    assert main([*QUICK, "--data", str(mini), "--out", str(out)]) == 0
    return out


def test_quick_run_scores_every_role(done):
    results = json.loads((done / "results.json").read_text())
    (entry,) = results["runs"]
    assert entry["seed"] == 0 and entry["steps_per_language"] == 2
    for role in addition.ROLES:
        r = entry["roles"][role]
        post, joint = r["posthoc"], r["joint"]
        # The same number of updates post hoc as in the joint run (measured from its data state).
        assert r["updates"] == entry["joint"]["updates"][r["code"]] == r["add"]["steps"]
        assert r["ratio"] == pytest.approx(2 ** (post["bits_per_char"] - joint["bits_per_char"]))
        # Extension leaves no <unk> in the new language's training text; its validation text may hold a character
        # the training text lacks (in these 150 verses of ake_Latn: "-" and "2"), which stays <unk>.
        assert r["add"]["unk_rate_after"] == 0.0 and post["unk_rate"] < 0.01
        assert post["old_identical"]["clean_encoder_outputs"]
        assert 0 <= post["unseen_share"] <= 1 and post["targets"] > 0
        # The add-language run reports the same bits per character (vocab.mlm_loss_per_character).
        assert r["add"]["eval/bits_per_char"] == pytest.approx(post["bits_per_char"], rel=1e-6)
        # The arm on a base model with the joint tokenizer: same updates, no extension, scored with that tokenizer.
        jv = entry["joint_vocab"][role]
        assert jv["updates"] == r["updates"] and jv["add"]["unk_rate_after"] == 0.0
        assert jv["posthoc"]["old_identical"]["clean_encoder_outputs"]
        assert jv["ratio"] == pytest.approx(2 ** (jv["posthoc"]["bits_per_char"] - joint["bits_per_char"]))
    script = entry["roles"]["script"]
    assert script["add"]["added_pieces"] > 0 and script["add"]["unk_rate_before"] > 0.3
    # own vocabularies (the default): old languages' outputs and MLM scores exact; a full-softmax control
    for role in addition.ROLES:
        post = entry["roles"][role]["posthoc"]
        assert post["old_identical"]["encoder_outputs"] and post["old_identical"]["mlm_loss"]
        assert entry["roles"][role]["add"]["vocabulary"] == "own" and "bits_per_char_full_softmax" in post
        joint = entry["roles"][role]["joint"]  # a softmax kept to fewer ids can only give the targets more mass
        assert joint["bits_per_char_own_pieces"] <= joint["bits_per_char"] + 1e-9
    # the initialisation arm: the default and mean-without-copies, after 0 updates and after the table's updates
    inits = entry["inits"]["related"]
    assert set(inits) == {"overlap", "mean:nocopy"} and set(inits["mean:nocopy"]) == {"0", "updates"}
    assert inits["overlap"]["updates"] == entry["roles"]["related"]["posthoc"]["bits_per_char"]
    assert "## Initialisation of the added rows" in (done / "report.md").read_text()
    # the arm trained and scored over every row: its model has no range for the language
    run = done / "seed0" / "steps2" / f"add-{entry['roles']['unrelated']['code']}-allsoftmax"
    model = XmodForMaskedLM.from_pretrained(run)
    assert model.config.vocab_range(entry["roles"]["unrelated"]["code"]) == (0, model.config.vocab_size)
    assert results["summary"]["unrelated"]["2"]["ratio_all_rows"]["n"] == 1
    assert results["summary"]["script"]["2"]["ratio"]["n"] == 1
    text = (done / "report.md").read_text()
    assert "guj_Gujr" in text and "ppl/char ratio" in text and "sweep" not in text and "Post hoc with the joint tokenizer" in text
    assert results["summary"]["related"]["2"]["joint_vocab"]["ratio"]["n"] == 1
    assert (done / "addition_ratio.png").read_bytes().startswith(b"\x89PNG")


def test_scores_split_seen_and_unseen_pieces(done, mini):
    entry = json.loads((done / "seed0" / "steps2" / "scores.json").read_text())
    run = done / "seed0" / "steps2" / "add-jiv_Latn"
    model, tok = XmodForMaskedLM.from_pretrained(run), tok_mod.load_language_tokenizer(run, "jiv_Latn")
    s = addition.AdditionSettings(data=str(mini), seq_len=32, batch_size=4, valid_lines=30, valid_batches=2)
    plan = addition.make_plan(dataclass_replace(s, k=2))
    everything = addition.score_language(model, tok, "jiv_Latn", plan.corpora["jiv_Latn"],
                                         [True] * tok.get_vocab_size(), s, 0)
    nothing = addition.score_language(model, tok, "jiv_Latn", plan.corpora["jiv_Latn"],
                                      [False] * tok.get_vocab_size(), s, 0)
    assert everything["ppl_unseen"] is None and nothing["ppl_seen"] is None
    assert everything["ppl"] == pytest.approx(nothing["ppl_unseen"]) == pytest.approx(entry["roles"]["related"]
                                                                                       ["posthoc"]["ppl"])
    post = entry["roles"]["related"]["posthoc"]
    share = post["unseen_share"]
    if 0 < share < 1:  # the overall loss is the share-weighted mix of the seen and unseen losses
        mixed = (1 - share) * math.log(post["ppl_seen"]) + share * math.log(post["ppl_unseen"])
        assert mixed == pytest.approx(math.log(post["ppl"]))
    assert everything["chars_per_piece"] == pytest.approx(everything["chars"] / everything["targets"])
    assert vocab_mod.piece_lengths(tok).size == tok.get_vocab_size()


def dataclass_replace(s, **changes):
    import dataclasses
    return dataclasses.replace(s, **changes)


def test_rerun_skips_finished_runs_and_refuses_other_settings(done, mini, capsys):
    stamp = {p: p.stat().st_mtime_ns for p in done.rglob("model.safetensors")}
    assert main([*QUICK, "--data", str(mini), "--out", str(done)]) == 0
    assert "scored before, skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in done.rglob("model.safetensors")} == stamp
    assert main([*QUICK, "--data", str(mini), "--out", str(done), "--vocab-size", "320"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_sweep_of_add_language_settings(done, mini):
    assert main([*QUICK, "--data", str(mini), "--out", str(done), "--sweep-language", "ukr_Cyrl",
                 "--sweep-steps", "0,1", "--sweep-lrs", "1e-3", "--sweep-warmups", "0", "--sweep-scale", "2"]) == 0
    sweep = json.loads((done / "sweep-ukr_Cyrl.json").read_text())
    assert [(r["lr"], r["warmup_ratio"], r["updates"]) for r in sweep["runs"]] == [(1e-3, 0.06, 0), (1e-3, 0.06, 1),
                                                                                  (1e-3, 0.0, 1)]
    assert sweep["init_from"] == ["acu_Latn"] and all(r["bits_per_char"] > 0 for r in sweep["runs"])
    # 0 updates: one update at learning rate 0, so the new modules are still the copy of acu_Latn's.
    model = XmodForMaskedLM.from_pretrained(done / "sweep" / "seed0-steps2" / "add-ukr_Cyrl-lr0.001-w0.06-n0")
    a, b = model.module_tables()[0]["acu_Latn"], model.module_tables()[0]["ukr_Cyrl"]
    assert all(p.equal(q) for p, q in zip(a.parameters(), b.parameters()))
    assert "add-language sweep on ukr_Cyrl" in (done / "report.md").read_text()
