"""Tokenizer: a SentencePiece-style Unigram model trained on an alpha-sampled multilingual sample, with XLM-R's
special-token layout (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=last id), saved so transformers loads it unchanged.

Why the saved tokenizer_config names "PreTrainedTokenizerFast" and not "XLMRobertaTokenizer": transformers 5
rebuilds an XLMRobertaTokenizer from the vocabulary alone, keeping a normaliser only when it is a SentencePiece
precompiled charsmap. Our NFKC normaliser would be dropped and text such as "ﬁ" or full-width digits would get
other ids. PreTrainedTokenizerFast (TokenizersBackend in 5.x) loads tokenizer.json as written, in 4.x and 5.x.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm

from .files import atomic_write, atomic_write_text
from .data import CorpusReport, count_lines, discover_corpora, read_lines, sampling_probs

log = logging.getLogger(__name__)
_HUB_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")  # "name" or "owner/name"

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = (BOS, PAD, EOS, UNK)  # in id order; <mask> is added last


def mask_id(tok: Tokenizer) -> int:
    """Id of <mask> (the last id of a tokenizer trained here; 250001 in XLM-R's)."""
    i = tok.token_to_id(MASK)
    if i is None:
        raise ValueError(f"tokenizer has no {MASK} token")
    return i


def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    # Split at whitespace first, as transformers' XLM-R tokenizer does, so runs of spaces make no "▁" pieces.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def _finish(tok: Tokenizer) -> Tokenizer:
    """Add <mask> last (lstrip like XLM-R: "a <mask>" has no "▁" piece before it) and the <s> A </s></s> B </s>
    post-processor."""
    if tok.token_to_id(MASK) is None:
        tok.add_special_tokens([AddedToken(MASK, lstrip=True, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))])
    check_special_tokens(tok)
    return tok


def check_special_tokens(tok: Tokenizer) -> None:
    """Raise unless <s>, <pad>, </s>, <unk> have ids 0..3 and <mask> exists: the model and data rely on it."""
    got = {t: tok.token_to_id(t) for t in (*SPECIAL_TOKENS, MASK)}
    want = dict(zip(SPECIAL_TOKENS, range(4)))
    if any(got[t] != i for t, i in want.items()) or got[MASK] is None:
        raise ValueError(f"tokenizer special-token ids are {got}; the XLM-R convention needs {want} and a {MASK}")


def _sample(corpora: Mapping[str, Path], sizes: Mapping[str, int], n_sample: int, alpha: float, seed: int,
            report: CorpusReport, progress: bool, max_bytes: int | None = None) -> list[str]:
    """n_sample lines, language l drawn with probability p_l ~ n_l^alpha; within a language, lines are drawn
    without replacement while the quota allows, so a small language repeats all its lines before any twice.
    max_bytes: the sample's size in UTF-8 bytes is bounded too, language l taking at most p_l * max_bytes (the
    trainer's memory grows with the bytes, not the lines)."""
    codes = list(corpora)
    probs = sampling_probs([sizes[c] for c in codes], alpha)
    rng = np.random.default_rng(seed)
    quotas = rng.multinomial(n_sample, probs)
    out: list[str] = []
    with tqdm(total=int(quotas.sum()), desc="tokenizer sample", unit=" lines", disable=not progress) as bar:
        for code, quota, p in zip(codes, quotas, probs):
            n = sizes[code]
            repeats, extra = divmod(int(quota), n)
            extra_lines = np.sort(rng.choice(n, size=extra, replace=False)) if extra else np.empty(0, np.int64)
            if repeats == 0 and extra == 0:
                continue
            j = 0  # next entry of extra_lines
            stop = n if repeats else int(extra_lines[-1]) + 1
            budget, used = (max(1, int(p * max_bytes)) if max_bytes else None), 0
            for index, _, text in read_lines(corpora[code], 0, stop, report=report):
                while j < extra and extra_lines[j] < index:  # drawn line was empty or invalid
                    j += 1
                times = repeats + (j < extra and extra_lines[j] == index)
                if budget is not None and times:
                    used += times * len(text.encode("utf-8"))
                    if used > budget:
                        log.warning(f"tokenizer sample: {code}: stopped at line {index + 1}, its share of the "
                                    f"{max_bytes:,}-byte sample is full")
                        break
                out.extend([text] * times)
                bar.update(times)
            log.info(f"tokenizer sample: {code}: {quota} lines (p={p:.4f}, n={n})")
    return out


def _sorted_pieces(tok: Tokenizer) -> Tokenizer:
    """Make the trained tokenizer the same on every run: order the pieces after the special tokens by their
    text, and re-score the characters the trainer appends below every trained piece.

    The Unigram trainer's piece set is stable, but not its order or all its scores: it appends the characters
    it must keep at decreasing scores (steps of 1e-4 below its lowest) in hash-map order, which changes from
    process to process. Measured on the demo's corpus: 222 of 1,999 scores differed between two runs, by up to
    0.02, all of them single characters below every multi-character piece, and that was enough to change a
    few segmentations and every figure downstream. Those characters get the same scores in text order. The
    other scores differ by float summation noise (~1e-14), so all are rounded to 1e-8."""
    spec = json.loads(tok.to_str())
    n = len(SPECIAL_TOKENS)
    vocab = sorted(([piece, round(score, 8)] for piece, score in spec["model"]["vocab"][n:]), key=lambda piece: piece[0])
    floor = min((score for piece, score in vocab if len(piece) > 1), default=None)
    appended = [i for i, (piece, score) in enumerate(vocab) if len(piece) == 1 and floor is not None and score < floor]
    if appended:
        top = max(vocab[i][1] for i in appended)
        for k, i in enumerate(appended):
            vocab[i] = [vocab[i][0], round(top - 1e-4 * k, 8)]
    spec["model"]["vocab"] = spec["model"]["vocab"][:n] + vocab
    return Tokenizer.from_str(json.dumps(spec))


def _rare_characters(lines: list[str], coverage: float, max_chars: int) -> set[str]:
    """Characters outside the most frequent ones that cover `coverage` of all characters (SentencePiece's
    character_coverage), also cut at max_chars so the vocabulary keeps room for multi-character pieces."""
    counts = Counter()
    for line in lines:
        counts.update(line)
    for char in [c for c in counts if c.isspace()]:  # whitespace splits words; it is never part of a piece
        del counts[char]
    total, covered, keep = sum(counts.values()), 0, 0
    ranked = counts.most_common()
    for char, n in ranked:
        if covered >= coverage * total or keep >= max_chars:
            break
        covered += n
        keep += 1
    if keep < len(ranked) and keep >= max_chars and covered < coverage * total:
        log.warning(f"tokenizer: only the {max_chars} most frequent characters fit the vocabulary (covering "
                    f"{covered / total:.4%} of the sample); the other {len(ranked) - keep} become {UNK}")
    return {char for char, _ in ranked[keep:]}


MAX_WORD_CHARS = 1000  # longer runs without whitespace are cut for the trainer (pieces are at most 16 characters)
_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_WORD_CHARS + 1))


def _split_long_words(line: str) -> str:
    """``line`` with every run of more than MAX_WORD_CHARS non-space characters cut into runs of MAX_WORD_CHARS: the
    Unigram trainer's memory grows with the longest word (ten 1 MB words took 2.5 GB and crashed it), while pieces
    are at most 16 characters, so only the counts of substrings across a cut change. Normal text has no such word."""
    if len(line) <= MAX_WORD_CHARS:
        return line
    return _LONG_WORD.sub(lambda m: " ".join(m.group(0)[i:i + MAX_WORD_CHARS]
                                             for i in range(0, len(m.group(0)), MAX_WORD_CHARS)), line)


def train_tokenizer(corpora: Mapping[str, str | os.PathLike] | str | os.PathLike, vocab_size: int, alpha: float = 0.3,
                    sample_sentences: int = 1_000_000, seed: int = 0, *, skip_lines: int = 0,
                    character_coverage: float = 0.9995, progress: bool = True,
                    sample_bytes: int | None = 256 << 20) -> Tokenizer:
    """Train a Unigram tokenizer of `vocab_size` ids (including the 5 special tokens) on a sample of at most
    `sample_sentences` lines and `sample_bytes` bytes of text (never more than the corpora hold), language l drawn
    with p_l ~ n_l^alpha. Lines longer than data.MAX_LINE_BYTES are skipped; what was skipped, per file and why, is
    logged as one warning.
    corpora: code -> file, or a directory of <code>.txt[.gz] files.

    skip_lines: leave out the last lines of every file (the validation tail). Characters beyond
    `character_coverage` of the sample are left out of the vocabulary and encode as <unk>.
    """
    if isinstance(corpora, (str, os.PathLike)):
        corpora = discover_corpora(corpora)
    corpora = {code: Path(p) for code, p in sorted(corpora.items())}
    if not corpora:
        raise ValueError("train_tokenizer needs at least one corpus")
    if vocab_size < 16:
        raise ValueError(f"vocab_size {vocab_size} is too small; use at least 16")
    sizes = {}
    for code, path in corpora.items():
        sizes[code] = count_lines(path) - skip_lines
        if sizes[code] <= 0:
            raise ValueError(f"{path} has no lines left after holding out the last {skip_lines}")
    report = CorpusReport()
    n_sample = min(sample_sentences, sum(sizes.values()))
    tok = _empty_tokenizer()
    lines = [tok.normalizer.normalize_str(line) for line in _sample(corpora, sizes, n_sample, alpha, seed, report,
                                                                    progress, sample_bytes)]
    if report:
        log.warning(f"tokenizer sample: {report.summary()}")
    if not lines:
        raise ValueError(f"no usable line in the tokenizer sample ({report.summary()})")
    rare = _rare_characters(lines, character_coverage, max_chars=(vocab_size - len(SPECIAL_TOKENS) - 1) // 2)
    if rare:
        # Blanking them keeps them out of the trainer's required alphabet; at encode time they map to <unk>.
        table = {ord(c): " " for c in rare}
        lines = [line.translate(table) for line in lines]
    lines = [_split_long_words(line) for line in lines]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size - 1, special_tokens=list(SPECIAL_TOKENS),
                                      unk_token=UNK, show_progress=progress, max_piece_length=16)
    if progress:  # the trainer's own progress shows only on a terminal; this line says what the wait is
        log.info("training the %d-piece unigram model on %s sampled lines", vocab_size, f"{len(lines):,}")
    tok.train_from_iterator(lines, trainer, length=len(lines))
    tok = _finish(_sorted_pieces(tok))
    if tok.get_vocab_size() != vocab_size:
        log.warning(f"tokenizer: the sample supports {tok.get_vocab_size()} ids, fewer than vocab_size={vocab_size};"
                    f" use tok.get_vocab_size() for the model")
    return tok


def save_tokenizer(tok: Tokenizer, directory: str | os.PathLike, model_max_length: int | None = None) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, loadable by load_tokenizer and by
    transformers.AutoTokenizer.from_pretrained with the same ids."""
    check_special_tokens(tok)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # each file atomically (files.atomic_write): a full disk or a kill never leaves a truncated tokenizer.json
    atomic_write(directory / "tokenizer.json", lambda tmp: tok.save(str(tmp)))
    special = {"bos_token": BOS, "eos_token": EOS, "sep_token": EOS, "cls_token": BOS, "unk_token": UNK,
               "pad_token": PAD, "mask_token": MASK}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "clean_up_tokenization_spaces": False}
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(directory / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
    return directory


# config.json key: the fingerprint of the tokenizer the model was trained with
FINGERPRINT_KEY = "xmodlm_tokenizer_sha256"


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """sha256 over the vocabulary, added tokens included: "id<TAB>piece<NEWLINE>" in id order. Two tokenizers with
    the same fingerprint give every id the same piece (stable across tokenizers versions, unlike tokenizer.json)."""
    h = hashlib.sha256()
    for piece, i in sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1]):
        h.update(f"{i}\t{piece}\n".encode("utf-8"))
    return h.hexdigest()


def check_tokenizer_fits(tok: Tokenizer, config, tokenizer_where: str, model_where: str) -> None:
    """Raise when ``tok`` cannot be the tokenizer of a model with ``config`` (an XmodConfig): ids past
    ``config.vocab_size``, or another vocabulary than the one whose fingerprint config.json records."""
    size = tok.get_vocab_size(with_added_tokens=True)
    if size > config.vocab_size:
        raise ValueError(f"the tokenizer {tokenizer_where} has {size} ids, the model {model_where} only "
                         f"{config.vocab_size} (config.vocab_size): they do not belong together")
    expected = getattr(config, "extra", {}).get(FINGERPRINT_KEY)
    if expected and expected != tokenizer_fingerprint(tok):
        raise ValueError(f"the tokenizer {tokenizer_where} is not the one the model {model_where} was trained with "
                         f"(vocabulary fingerprint {tokenizer_fingerprint(tok)[:12]}, config.json's {FINGERPRINT_KEY} "
                         f"{expected[:12]}); use the model's own tokenizer")


def load_tokenizer(dir_or_name: str | os.PathLike) -> Tokenizer:
    """A tokenizer from a directory holding tokenizer.json, a tokenizer.json file, or a Hugging Face hub id (e.g.
    "FacebookAI/xlm-roberta-base"; needs a network). Its special tokens must follow the XLM-R layout."""
    path = Path(dir_or_name)
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {dir_or_name}")
    if path.is_file():
        tok = Tokenizer.from_file(str(path))
    elif not _HUB_ID.fullmatch(str(dir_or_name)):
        raise FileNotFoundError(f"tokenizer not found: {dir_or_name} (neither a directory with tokenizer.json nor a "
                                "hub id like 'FacebookAI/xlm-roberta-base')")
    else:
        try:
            tok = Tokenizer.from_pretrained(str(dir_or_name))
        except Exception as e:
            raise OSError(f"cannot load tokenizer {dir_or_name!r} from the Hugging Face hub: {e}") from e
    check_special_tokens(tok)
    return tok


LANGUAGE_TOKENIZERS = "tokenizers"  # <model>/tokenizers/<code>/: the tokenizer of a language with its own vocabulary


def language_tokenizer_dir(directory: str | os.PathLike, code: str) -> Path:
    return Path(directory) / LANGUAGE_TOKENIZERS / code


def load_language_tokenizer(dir_or_name: str | os.PathLike, code: str | None) -> Tokenizer:
    """The tokenizer for text in ``code``: its own (``tokenizers/<code>/`` of a model directory, written by
    add-language --vocabulary own) where it has one, else the model's shared tokenizer."""
    own = language_tokenizer_dir(dir_or_name, code) if code else None
    return load_tokenizer(own if own is not None and (own / "tokenizer.json").is_file() else dir_or_name)


class LanguageTokenizers:
    """A model's tokenizers when some of its languages have their own: the shared one and ``own`` ({code: its
    tokenizer}). Code that knows a text's language picks with ``for_language``; code that needs the vocabulary the
    model was trained with (fingerprints, saving) takes ``shared_tokenizer``."""

    def __init__(self, shared: Tokenizer, own: dict[str, Tokenizer]):
        self.shared, self.own = shared, dict(own)

    def get(self, code: str | None) -> Tokenizer:
        return self.own.get(code, self.shared) if code else self.shared


def load_model_tokenizers(directory: str | os.PathLike, explicit: str | os.PathLike | None = None
                          ) -> Tokenizer | LanguageTokenizers:
    """The tokenizer(s) of a model directory: its shared tokenizer alone, or a ``LanguageTokenizers`` where some
    language has one of its own. ``explicit`` (a --tokenizer the user named): that one, for every language."""
    if explicit:
        return load_tokenizer(explicit)
    shared, own = load_tokenizer(directory), own_tokenizers(directory)
    return LanguageTokenizers(shared, own) if own else shared


def own_tokenizers(directory: str | os.PathLike) -> dict[str, Tokenizer]:
    """{code: tokenizer} of the languages with their own in a model directory (its tokenizers/<code>/)."""
    root = Path(directory) / LANGUAGE_TOKENIZERS
    if not root.is_dir():
        return {}
    return {d.name: load_tokenizer(d) for d in sorted(root.iterdir()) if (d / "tokenizer.json").is_file()}


def save_own_tokenizers(own: dict[str, Tokenizer], directory: str | os.PathLike) -> None:
    for code, tok in own.items():
        save_tokenizer(tok, language_tokenizer_dir(directory, code))


def save_tokenizers(tok: Tokenizer | LanguageTokenizers, directory: str | os.PathLike) -> None:
    """A model's tokenizer(s) into ``directory``: the shared one, and each language's own in tokenizers/<code>/."""
    save_tokenizer(shared_tokenizer(tok), directory)
    if isinstance(tok, LanguageTokenizers):
        save_own_tokenizers(tok.own, directory)


def for_language(tok: Tokenizer | LanguageTokenizers, code: str | None) -> Tokenizer:
    """The tokenizer for text in ``code`` (``tok`` itself unless it holds per-language ones)."""
    return tok.get(code) if isinstance(tok, LanguageTokenizers) else tok


def shared_tokenizer(tok: Tokenizer | LanguageTokenizers) -> Tokenizer:
    return tok.shared if isinstance(tok, LanguageTokenizers) else tok
