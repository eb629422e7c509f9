"""Shared task conventions: the registry, XLM-R special tokens, pair truncation, padding."""

import importlib
import random

import pytest
import torch
from tokenizers import Tokenizer, models

from xmodlm import tasks
from xmodlm.tasks import inputs, pair, prepare_tokenizer, single


def test_get_returns_each_task_record_and_rejects_unknown_names():
    for name in tasks.NAMES:
        module = importlib.import_module(f"xmodlm.tasks.{name}")
        for attr in ("load", "featurize", "collate", "evaluate"):
            assert callable(getattr(module, attr)), (name, attr)
        record = tasks.get(name)
        assert record is module.TASK and record.name == name
        for attr in ("read", "featurize", "collate", "decode", "format", "read_predictions", "evaluate"):
            assert callable(getattr(record, attr)), (name, attr)
    with pytest.raises(ValueError, match="'xnli'.*nli, ner, pos, qa, mc"):
        tasks.get("xnli")


def test_single_and_pair_layout():
    assert single([7, 8, 9], 10) == [0, 7, 8, 9, 2]
    assert single([7, 8, 9], 4) == [0, 7, 8, 2]
    assert pair([5, 6], [7], 10) == [0, 5, 6, 2, 2, 7, 2]


def _longest_first(a, b, budget):
    # Reference: remove one token at a time from the longer side, from b on a tie.
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def test_pair_truncates_longest_first_like_a_token_by_token_loop():
    rng = random.Random(0)
    for _ in range(500):
        a = [10 + i for i in range(rng.randint(0, 40))]
        b = [100 + i for i in range(rng.randint(0, 40))]
        max_length = rng.randint(6, 60)
        ta, tb = _longest_first(a, b, max_length - 4)
        assert pair(a, b, max_length) == [0, *ta, 2, 2, *tb, 2]
        assert len(pair(a, b, max_length)) <= max_length


def test_lengths_too_small_for_special_tokens_raise():
    with pytest.raises(ValueError, match="max_length 5"):
        pair([1], [2], 5)
    with pytest.raises(ValueError, match="max_length 2"):
        single([1], 2)


def test_inputs_pad_with_pad_id_and_mask_zero():
    batch = inputs([[0, 5, 2], [0, 2]])
    assert batch["input_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_prepare_tokenizer_checks_special_ids(tok):
    assert prepare_tokenizer(tok) is tok
    wrong = Tokenizer(models.WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="<s>=0, <pad>=1"):
        prepare_tokenizer(wrong)


def test_prepare_tokenizer_ignores_padding_and_truncation_settings(tok):
    configured = Tokenizer.from_str(tok.to_str())
    configured.enable_padding(pad_id=1, pad_token="<pad>", length=64)
    configured.enable_truncation(max_length=3)
    plain = prepare_tokenizer(configured)
    text = "The committee approved the new budget on Tuesday."
    assert plain.encode(text, add_special_tokens=False).ids == tok.encode(text, add_special_tokens=False).ids
    assert configured.padding is not None  # the caller's object is untouched


# ---------------------------------------------------------------- the records


@pytest.mark.parametrize("name", tasks.NAMES)
def test_head_tensors_are_what_the_task_model_adds_to_a_masked_lm(name):
    from xmodlm.config import preset
    from xmodlm.model import XmodForMaskedLM

    task = tasks.get(name)
    config = preset("tiny", vocab_size=50, languages=["en_XX"], id2label={0: "a", 1: "b", 2: "c"})
    added = set(task.head(config).state_dict()) - set(XmodForMaskedLM(config).state_dict())
    assert added == set(task.head_tensors)


def test_ner_and_pos_share_one_tagging_implementation():
    from xmodlm.tasks import ner, pos, tagging

    assert ner.Example is pos.Example is tagging.Example
    assert ner.collate is pos.collate is tagging.collate
    assert ner.TASK.format is pos.TASK.format and ner.TASK.collate is pos.TASK.collate
    assert ner.TASK.head is pos.TASK.head and ner.TASK.head_tensors == pos.TASK.head_tensors


def test_nli_reads_the_head_outputs_in_the_heads_label_order(caplog):
    from xmodlm.tasks import nli

    task = tasks.get("nli")
    outputs = [(torch.tensor([0.0, 2.0, 1.0]),), (torch.tensor([3.0, 0.0, 1.0]),)]  # argmax 1, 0
    head = task.check_labels(["neutral", "contradiction", "entailment"])
    assert task.decode([], [], outputs, tasks.Setup(labels=head)) == [2, 1]  # contradiction, neutral
    with caplog.at_level("WARNING", logger="xmodlm.tasks.nli"):
        assert task.check_labels(["LABEL_0", "LABEL_1", "LABEL_2"]) == nli.LABELS
    assert "unnamed" in caplog.text
    with pytest.raises(ValueError, match="are not the NLI labels"):
        task.check_labels(["positive", "negative"])
