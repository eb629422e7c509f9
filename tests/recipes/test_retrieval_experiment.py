"""The retrieval side of ``xmodlm experiment curse --retrieval`` (recipes/retrieval_experiment.py): families from
languages.tsv, language groups, per-seed summaries, and the mean and spread over seeds (report.over_seeds)."""

from pathlib import Path

import pytest

from xmodlm import report
from xmodlm.recipes import experiment
from xmodlm.recipes import retrieval_experiment as rx

BIBLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "bible"
MAYAN = ["cak_Latn", "jac_Latn", "mam_Latn", "quc_Latn", "usp_Latn"]


def test_families_come_from_languages_tsv(tmp_path):
    assert rx.read_families(tmp_path) == {}  # no languages.tsv: no families, no error
    (tmp_path / "languages.tsv").write_text("code\tlanguage\tfamily\naa_X\tAa\tF1\nbb_X\tBb\tF2\n")
    assert rx.read_families(tmp_path) == {"aa_X": "F1", "bb_X": "F2"}
    (tmp_path / "languages.tsv").write_text("code\tname\naa_X\tAa\n")
    with pytest.raises(ValueError, match="'family'"):
        rx.read_families(tmp_path)


def test_groups_split_zero_shot_languages_by_the_pivots_family():
    families = {"p": "A", "a": "A", "b": "B", "c": "A", "d": "C"}
    parts = rx.groups("p", ["b"], ["p", "a", "b", "c", "d"], families)
    assert parts == {"all": ["a", "b", "c", "d"], "fine-tuned": ["b"], "zero-shot": ["a", "c", "d"],
                     "zero-shot, pivot's family": ["a", "c"], "zero-shot, other families": ["d"]}
    assert "fine-tuned" not in rx.groups("p", ["x"], ["p", "a"], families)  # empty groups are left out


def _scores(**acc1):
    return {lang: {"acc@1": v, "acc@10": 10 * v} for lang, v in acc1.items()}


def test_summary_averages_groups_and_pairs_models_within_a_seed():
    figures = {"pivot": "p", "finetune": ["a"], "related": {},
               "k": {"2": {"xmod": {"before": _scores(a=2.0)}, "shared": {"before": _scores(a=1.0)}},
                     "3": {"xmod": {"before": _scores(a=2.0, b=4.0), "after": _scores(a=6.0, b=8.0)},
                           "shared": {"before": _scores(a=1.0, b=1.0), "after": _scores(a=3.0, b=5.0)}},
                     rx.UNTRAINED: {"untrained": {"before": _scores(a=0.5, b=1.5)}}}}
    summary = rx.summarise(figures, ["p", "a", "b"], {"p": "A", "a": "B", "b": "A"})
    groups = summary["groups"]
    assert groups["3"]["xmod"]["after"]["all"] == {"acc@1": 7.0, "acc@10": 70.0}
    assert groups["3"]["xmod"]["after"]["zero-shot, pivot's family"]["acc@1"] == 8.0
    assert groups["2"][rx.UNTRAINED]["before"]["all"]["acc@1"] == 0.5  # the untrained model read on k=2's languages
    diffs = summary["differences"]
    assert diffs["3"]["after"]["zero-shot"] == {"xmod - shared": 3.0, "xmod - untrained": 6.5,
                                                "shared - untrained": 3.5}  # after fine-tuning vs untrained as is
    assert diffs["2"]["before"]["all"]["xmod - shared"] == 1.0 and "after" not in diffs["2"]


def test_over_seeds_gives_mean_and_sample_sd_at_every_number():
    agg = report.over_seeds([{"a": {"x": 1.0, "n": "text"}, "b": 2}, {"a": {"x": 3.0, "n": "other"}, "b": 2},
                             None])
    assert agg["a"]["x"] == {"mean": 2.0, "sd": pytest.approx(2 ** 0.5), "values": [1.0, 3.0]}
    assert agg["a"]["n"] == "text" and agg["b"]["sd"] == 0.0  # text from the first seed
    assert report.mean_sd([5.0])["sd"] == 0.0
    assert report.format_mean_sd(agg["a"]["x"]) == "2.00 ± 1.41"
    assert report.format_mean_sd(report.mean_sd([0.1, 0.3]), 1, percent=True) == "+20.0% ± 14.1%"
    assert report.format_mean_sd(None) == report.MISSING


@pytest.mark.skipif(not BIBLE.is_dir(), reason=f"the bible corpus (../shared/data/bible) is not at {BIBLE}")
def test_bible_plan_pivot_fine_tuning_languages_and_mayan_relatives():
    s = experiment.CurseSettings(data=str(BIBLE), languages=[2, 4, 8, 16, 32], heldout="zul_Latn",
                                 init_from="swh_Latn", retrieval=True, related_pivots=["cak_Latn"])
    plan = experiment.plan_data(s, [2, 4, 8, 16, 32])
    rs, families, related = experiment._retrieval_plan(s, plan)
    assert rs.pivot == "acu_Latn" == plan.order[0]  # the first language: every k has it
    assert rs.finetune == ["agr_Latn", "ake_Latn", "amu_Latn"] and len(rs.languages) == 32
    assert related == {"cak_Latn": MAYAN[1:]} and all(families[c] == "Mayan" for c in MAYAN)
    assert set(MAYAN) <= set(rs.languages) and "zul_Latn" not in rs.languages
    rx._check_disjoint(rs)  # the fine-tuning verses (2000:) are none of the evaluated ones (the first 1,000)
    with pytest.raises(ValueError, match="every k must include it"):
        experiment._retrieval_plan(experiment.CurseSettings(data=str(BIBLE), languages=[2, 32], pivot="cak_Latn",
                                                            retrieval=True), plan)
