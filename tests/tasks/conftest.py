"""Fixtures for the task tests: the shared data folder and a tiny XLM-R-style tokenizer."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# /work/main/tests/tasks/conftest.py -> parents[3] is the folder that holds the checkout.
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA} (the shared data folder next to the checkout)")
    return DATA


@pytest.fixture(scope="session")
def tok(data_dir) -> Tokenizer:
    """Unigram + Metaspace like XLM-R's SentencePiece, trained in ~0.5 s on 40 NTREX
    lines of each of 17 languages; <s> <pad> </s> <unk> are ids 0..3, <mask> is last."""
    lines = []
    for f in sorted((data_dir / "ntrex").glob("*.txt")):
        lines += f.read_text(encoding="utf-8").splitlines()[:40]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens(["<mask>"])
    return tok
