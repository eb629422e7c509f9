"""Vocabulary extension for a language added after pre-training, per-row token counts, and the initialisation of
new embedding rows.

Extension (``extend_tokenizer``): pieces are trained on the new language alone, and those that contain at least one
*new character* are appended after every existing id (after ``<mask>``), so no old id moves. A new character is one
that occurs in no piece of the old vocabulary (after the tokenizer's NFKC normalisation): the old tokenizer can only
turn it into ``<unk>``. Why old tokenisation cannot change: Unigram segments each whitespace-delimited word on its own
(Viterbi over the pieces that match substrings of it), and a piece holding a character that a word lacks never
matches that word. So every word without a new character (every word the old vocabulary tokenised without
``<unk>``: its characters are all in old pieces) keeps exactly its old ids; only words that hold a new character,
which were ``<unk>`` before, get new pieces. Two details keep this exact: new scores are raised to at least the old
minimum (tokenizers scores ``<unk>`` at the vocabulary's minimum minus 10, and a lower minimum would re-weigh the
``<unk>`` paths of old text), and ``<mask>``, an added token with id N that the Unigram list does not hold, gets a
placeholder piece at position N (the list position is the id), scored at the old minimum. Every new character also
gets a single-character piece, so the new language's training text has no ``<unk>`` afterwards.

An own vocabulary (``own_tokenizer``, add-language's default): a tokenizer trained on the new language alone,
whose pieces take ids after every existing row; its other ids are the shared special tokens and placeholders
(``pad_tokenizer`` pads the shared tokenizer with the same kind, so ids and rows keep matching). Every row the language uses is its
own and trains; ``init_own_rows`` copies the shared row of a piece the shared vocabulary has, and initialises the
others as below.

Ownership of rows (``resize_vocabulary``): the languages a model has when rows are appended keep their masked-LM
softmax over the rows that existed (``config.extra["language_vocab_sizes"]``), so their MLM scores do not change;
the new language, and any added later, score every row.

Counts (``COUNTS_NAME`` next to the weights): how often each vocabulary row occurred in the token streams a
checkpoint was trained on (pre-training, then each added language), counted by ``MLMBatches(count_tokens=True)`` on
the global batches as they are drawn (before masking), and saved in every checkpoint's data state, so a resumed run
counts exactly what an uninterrupted one does. A row with count 0 was never an input or a target in training (it
only moved as a softmax row pushed down and by weight decay).

Initialisation of new rows (``init_new_rows``; ``method``):

* ``mean``: each new row is drawn from a normal distribution with the mean and covariance of the existing rows (the
  rows seen in training when counts exist; Hewitt 2021), its bias the mean bias of those rows;
* ``script``: the same, with the mean and covariance of the rows whose pieces are in the new piece's script (by
  Unicode character names, ``piece_script``); a script the vocabulary lacks falls back to all rows;
* ``overlap`` (FOCUS / FVT-style): each new piece is segmented by the old tokenizer, and its row and bias are the
  mean of its segments' rows and biases; a segment that was ``<unk>`` (new characters) contributes the mean of the
  new single-character rows of its characters, which are drawn as in ``script``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from .data import count_lines, encode_lines, read_lines
from .files import atomic_write_text
from .tokenizer import MASK, SPECIAL_TOKENS, UNK_ID, mask_id, train_tokenizer

log = logging.getLogger(__name__)

COUNTS_NAME = "vocab_counts.json"
INIT_METHODS = ("mean", "script", "overlap")
EMBEDDING = "roberta.embeddings.word_embeddings.weight"
LM_BIAS = "lm_head.bias"


# --- characters and pieces ----------------------------------------------------------------------------------------
def _model_vocab(tok: Tokenizer) -> list[list]:
    spec = json.loads(tok.to_str())
    if spec["model"]["type"] != "Unigram":
        raise ValueError(f"vocabulary extension needs a Unigram tokenizer, this one is {spec['model']['type']}")
    return spec["model"]["vocab"]


def piece_characters(tok: Tokenizer) -> set[str]:
    """Every character of every piece of the model's vocabulary (special tokens left out)."""
    specials = {*SPECIAL_TOKENS, MASK}
    return {c for piece, _ in _model_vocab(tok) if piece not in specials for c in piece}


def normalized_characters(tok: Tokenizer, lines: Iterable[str]) -> Counter:
    """Character counts of the lines after the tokenizer's normaliser, whitespace left out (it splits words)."""
    counts: Counter = Counter()
    norm = tok.normalizer
    for line in lines:
        counts.update(norm.normalize_str(line) if norm is not None else line)
    for c in [c for c in counts if c.isspace()]:
        del counts[c]
    return counts


def new_characters(tok: Tokenizer, lines: Iterable[str]) -> Counter:
    """Counts of the characters of ``lines`` (normalised) that no piece of ``tok`` holds: the old tokenizer can only
    encode them as ``<unk>``, and a piece containing one never matches a word of old text."""
    have = piece_characters(tok)
    return Counter({c: n for c, n in normalized_characters(tok, lines).items() if c not in have})


def unk_rate(tok: Tokenizer, lines: Sequence[str]) -> tuple[int, int]:
    """(``<unk>`` tokens, all tokens) when ``tok`` encodes ``lines``."""
    ids, _ = encode_lines(tok, list(lines), eos_id=-1)
    ids = ids[ids >= 0]
    return int((ids == UNK_ID).sum()), int(ids.size)


def training_lines(path: str | os.PathLike, skip_lines: int = 0) -> list[str]:
    """The usable lines of a corpus file except the last ``skip_lines`` (the validation tail)."""
    stop = count_lines(path) - skip_lines
    if stop <= 0:
        raise ValueError(f"{path} has no lines left after holding out the last {skip_lines}")
    return [text for _, _, text in read_lines(path, 0, stop)]


_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "HEBREW", "ARABIC", "SYRIAC", "THAANA", "NKO", "DEVANAGARI",
            "BENGALI", "GURMUKHI", "GUJARATI", "ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "SINHALA", "THAI",
            "LAO", "TIBETAN", "MYANMAR", "GEORGIAN", "HANGUL", "ETHIOPIC", "CHEROKEE", "CANADIAN", "OGHAM", "RUNIC",
            "KHMER", "MONGOLIAN", "HIRAGANA", "KATAKANA", "CJK", "BOPOMOFO", "YI", "TIFINAGH", "VAI", "JAVANESE",
            "BALINESE", "SUNDANESE", "OL", "ADLAM", "BAMUM", "COPTIC", "GLAGOLITIC", "SAMARITAN", "MANDAIC")


def char_script(c: str) -> str:
    """The script of a character from its Unicode name ("LATIN SMALL LETTER A" -> "LATIN", "CANADIAN SYLLABICS A" ->
    "CANADIAN"); digits, punctuation, symbols and marks of no named script -> "COMMON"."""
    name = unicodedata.name(c, "")
    first = name.split(" ", 1)[0]
    return first if first in _SCRIPTS else "COMMON"


def piece_script(piece: str) -> str:
    """The most frequent script among a piece's characters other than COMMON ones ("▁" included), else COMMON."""
    scripts = Counter(char_script(c) for c in piece)
    scripts.pop("COMMON", None)
    return scripts.most_common(1)[0][0] if scripts else "COMMON"


def piece_lengths(tok: Tokenizer) -> np.ndarray:
    """Characters of text each id stands for ("▁" counts as the space it replaces; special tokens 0), for scoring
    per character: ``loss_per_character`` divides by the characters the scored pieces cover."""
    out = np.zeros(tok.get_vocab_size(), dtype=np.int64)
    specials = {*SPECIAL_TOKENS, MASK}
    for i, (piece, _) in enumerate(_model_vocab(tok)):
        if piece not in specials and i < out.size:
            out[i] = len(piece)
    return out


# --- extension ------------------------------------------------------------------------------------------------------
@dataclass
class Extension:
    """What ``extend_tokenizer`` did: the pieces appended (in id order, from ``first_id``), the new characters found
    (with their counts in the new text), and the characters of the text the old pieces hold but cannot produce alone
    (possible only in a tokenizer trained elsewhere; they stay ``<unk>``)."""

    tokenizer: Tokenizer
    old_size: int
    pieces: list[str] = field(default_factory=list)
    new_chars: Counter = field(default_factory=Counter)
    uncovered: list[str] = field(default_factory=list)

    @property
    def first_id(self) -> int:
        return self.tokenizer.get_vocab_size() - len(self.pieces)


def default_budget(vocab_size: int, n_languages: int) -> int:
    """Pieces to train on a new language when none is asked for: its share of the old vocabulary (at least 100)."""
    return max(100, vocab_size // max(1, n_languages))


def extend_tokenizer(tok: Tokenizer, lines: Sequence[str], budget: int, *, seed: int = 0,
                     sample_sentences: int = 200_000) -> Extension:
    """``tok`` with pieces for the new language's ``lines`` appended (see the module docstring); ``budget`` pieces
    are trained on ``lines`` and those holding a new character are kept, plus one single-character piece per new
    character. No new character, or budget 0: ``tok`` itself, unchanged."""
    old_vocab = _model_vocab(tok)
    old_size = tok.get_vocab_size()
    m = mask_id(tok)
    placeholder = len(old_vocab) == m == old_size - 1  # <mask> is an added token only, with the last id
    if not placeholder and not (len(old_vocab) == old_size and old_vocab[m][0] == MASK):
        raise ValueError(f"the Unigram list has {len(old_vocab)} pieces for {old_size} ids, {MASK} id {m}: "
                         "appended pieces would not get the next ids")
    new_chars = new_characters(tok, lines)
    singles = {piece for piece, _ in old_vocab if len(piece) == 1}
    present = normalized_characters(tok, lines)
    uncovered = sorted(c for c in present if c not in new_chars and c not in singles)
    if uncovered:
        log.warning("vocabulary: %d characters of the new text occur in old pieces but have no piece of their own, "
                    "so they can stay <unk>: %s", len(uncovered), "".join(uncovered[:40]))
    if not new_chars or budget <= 0:
        return Extension(tok, old_size, [], new_chars, uncovered)
    floor = min(score for _, score in old_vocab)
    with tempfile.TemporaryDirectory() as tmp:  # train_tokenizer reads files
        path = Path(tmp) / "new.txt"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        size = budget + len(SPECIAL_TOKENS) + 1
        trained = train_tokenizer({"new": path}, vocab_size=max(size, 16), sample_sentences=sample_sentences,
                                  seed=seed, character_coverage=1.0, progress=False)
    known = {piece for piece, _ in old_vocab}
    pieces: dict[str, float] = {}
    for piece, score in _model_vocab(trained)[len(SPECIAL_TOKENS):]:
        if piece in known or piece == MASK or not any(c in new_chars for c in piece):
            continue
        pieces[piece] = max(float(score), floor)
    for c in sorted(new_chars):  # every new character can stand alone: no <unk> in the new language's text
        pieces.setdefault(c, floor)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    if placeholder:  # a piece at <mask>'s position keeps list position == id for the pieces after it
        vocab.append([MASK, floor])
    vocab.extend([piece, score] for piece, score in pieces.items())
    new = Tokenizer.from_str(json.dumps(spec))
    if new.get_vocab_size() != old_size + len(pieces) or mask_id(new) != m:
        raise AssertionError("vocabulary extension moved an id")  # a tokenizers version that numbers differently
    return Extension(new, old_size, list(pieces), new_chars, uncovered)


# --- a vocabulary of the new language's own ------------------------------------------------------------------------
PLACEHOLDER = "\ufb01"  # NFKC turns it into "fi": after normalisation no text holds it, so no word matches a
# piece that starts with it; placeholders keep list position == id where a tokenizer must not produce an id


def _placeholder(i: int) -> str:
    return f"{PLACEHOLDER}{i}"


def pad_tokenizer(tok: Tokenizer, size: int) -> Tokenizer:
    """``tok`` with placeholder pieces up to ``size`` ids (pieces no text matches, scored at the vocabulary's
    minimum so ``<unk>`` paths keep their weight): the shared tokenizer of a model whose later rows belong to a
    language with its own tokenizer. Every text keeps its ids; ``tok`` itself where it has ``size`` ids already."""
    old_size = tok.get_vocab_size()
    if size <= old_size:
        return tok
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    floor = min(score for _, score in vocab)
    m = mask_id(tok)
    if len(vocab) == m == old_size - 1:  # <mask> is an added token only, with the last id: hold its position
        vocab.append([MASK, floor])
    vocab.extend([_placeholder(i), floor] for i in range(old_size, size))
    new = Tokenizer.from_str(json.dumps(spec))
    if new.get_vocab_size() != size or mask_id(new) != m:
        raise AssertionError("padding the tokenizer moved an id")
    return new


@dataclass
class OwnVocabulary:
    """What ``own_tokenizer`` made: the new language's tokenizer, whose pieces (``pieces``) have the ids
    ``first_id``, ``first_id + 1``, ...; its other ids are the special tokens (where the shared tokenizer has them)
    and placeholders that no text produces."""

    tokenizer: Tokenizer
    first_id: int
    pieces: list[str]


def own_tokenizer(tok: Tokenizer, lines: Sequence[str], budget: int, first_id: int, *, seed: int = 0,
                  sample_sentences: int = 200_000) -> OwnVocabulary:
    """A tokenizer of ``budget`` pieces trained on the new language's ``lines`` alone, with the shared tokenizer's
    normaliser, pre-tokeniser, special tokens and their ids, whose pieces take the ids from ``first_id`` on (the
    rows appended for the language; ``first_id`` >= the shared vocabulary's size). Every character of ``lines`` gets
    a piece (character coverage 1), so the training text has no ``<unk>``."""
    if budget <= 0:
        raise ValueError(f"an own vocabulary needs a positive number of pieces, got {budget}")
    old_vocab = _model_vocab(tok)
    if first_id < tok.get_vocab_size():
        raise ValueError(f"first_id {first_id} lies inside the shared vocabulary ({tok.get_vocab_size()} ids)")
    with tempfile.TemporaryDirectory() as tmp:  # train_tokenizer reads files
        path = Path(tmp) / "new.txt"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        trained = train_tokenizer({"new": path}, vocab_size=max(budget + len(SPECIAL_TOKENS) + 1, 16),
                                  sample_sentences=sample_sentences, seed=seed, character_coverage=1.0,
                                  progress=False)
    pieces = [(piece, float(score)) for piece, score in _model_vocab(trained)[len(SPECIAL_TOKENS):]
              if piece != MASK]
    floor = min(score for _, score in pieces)
    specials = {*SPECIAL_TOKENS, MASK}
    spec = json.loads(tok.to_str())
    vocab = [[piece, score] if piece in specials else [_placeholder(i), floor]
             for i, (piece, score) in enumerate(old_vocab)]
    m = mask_id(tok)  # <mask> may be an added token only, with the last id: hold its position in the list
    vocab.extend([MASK if i == m else _placeholder(i), floor] for i in range(len(vocab), first_id))
    vocab.extend([piece, score] for piece, score in pieces)
    spec["model"]["vocab"] = vocab
    new = Tokenizer.from_str(json.dumps(spec))
    if new.get_vocab_size() != first_id + len(pieces) or mask_id(new) != m:
        raise AssertionError("the own vocabulary moved an id")
    return OwnVocabulary(new, first_id, [piece for piece, _ in pieces])


def init_own_rows(method: str, weight: torch.Tensor, bias: torch.Tensor | None, old_tok: Tokenizer,
                  pieces: Sequence[str], reference: np.ndarray, seed: int = 0,
                  copy: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial rows and biases of an own vocabulary's ``pieces``: a piece the shared vocabulary has, with a row in
    ``copy`` (default: ``reference``, the rows trained in pre-training), starts as a copy of that row and bias; the
    others as ``init_new_rows`` makes them (``method``)."""
    rows, out_bias = init_new_rows(method, weight, bias, old_tok, pieces, reference, seed=seed)
    copy = reference if copy is None else copy
    ids = old_tok.get_vocab()
    for k, piece in enumerate(pieces):
        i = ids.get(piece)
        if i is not None and i < weight.shape[0] and copy[i]:
            rows[k] = weight[i].detach().to(rows.dtype)
            out_bias[k] = 0.0 if bias is None else float(bias[i].detach())
    return rows, out_bias


# --- counts ---------------------------------------------------------------------------------------------------------
def count_ids(tok: Tokenizer, lines: Sequence[str], vocab_size: int | None = None) -> np.ndarray:
    """How often each id occurs when ``tok`` encodes ``lines`` (without special tokens)."""
    size = vocab_size or tok.get_vocab_size()
    ids, _ = encode_lines(tok, list(lines), eos_id=-1)
    return np.bincount(ids[ids >= 0], minlength=size).astype(np.int64)


def write_counts(directory: str | os.PathLike, counts: np.ndarray, sources: list[dict]) -> Path:
    """Write ``COUNTS_NAME``: one count per vocabulary row, and what they were counted on (JSON, atomically)."""
    counts = np.asarray(counts, dtype=np.int64)
    doc = {"format": "xmodlm-vocab-counts", "version": 1, "vocab_size": int(counts.size),
           "what": "occurrences of each vocabulary id in the token streams the model was trained on (before "
                   "masking): pre-training, then every language added since",
           "sources": sources, "counts": counts.tolist()}
    path = Path(directory) / COUNTS_NAME
    atomic_write_text(path, json.dumps(doc) + "\n")
    return path


def read_counts(directory: str | os.PathLike, vocab_size: int | None = None) -> tuple[np.ndarray, list[dict]] | None:
    """(counts, sources) from a checkpoint directory, or None where it has none (any checkpoint not trained here,
    e.g. facebook/xmod-base) or they do not fit ``vocab_size`` (then logged)."""
    path = Path(directory) / COUNTS_NAME
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        counts = np.asarray(doc["counts"], dtype=np.int64)
        sources = list(doc.get("sources", []))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a vocabulary-count file ({e})") from None
    if vocab_size is not None and counts.size != vocab_size:
        log.warning("%s has %d counts for a vocabulary of %d; ignored", path, counts.size, vocab_size)
        return None
    return counts, sources


# --- the model's vocabulary rows ------------------------------------------------------------------------------------
def resize_vocabulary(model: nn.Module, rows: torch.Tensor, bias: torch.Tensor | None = None, *,
                      limit_existing: bool = True) -> None:
    """Append ``rows`` (K, hidden) to the word embeddings of an X-Mod model (and its tied decoder), ``bias`` (K,) to
    ``lm_head.bias`` where the model has an LM head (zeros if not given); ``config.vocab_size`` follows. Old rows keep
    their values bit for bit; the embedding and the bias are new Parameters (build optimizers afterwards).

    limit_existing: the languages the model has now keep their masked-LM softmax over the old rows
    (``config.extra["language_vocab_sizes"]``, read by ``XmodForMaskedLM``), so their MLM scores do not change;
    languages added later score every row."""
    sizes = model.config.extra.setdefault("language_vocab_sizes", {}) if limit_existing else {}
    for code in model.config.languages if limit_existing else ():
        sizes.setdefault(code, model.config.vocab_size)
    emb = model.get_submodule("roberta.embeddings.word_embeddings" if hasattr(model, "roberta") else
                              "embeddings.word_embeddings")
    old = emb.weight
    rows = rows.to(device=old.device, dtype=old.dtype)
    with torch.no_grad():
        emb.weight = nn.Parameter(torch.cat([old.detach(), rows]), requires_grad=old.requires_grad)
    emb.num_embeddings = emb.weight.shape[0]
    head = getattr(model, "lm_head", None)
    if head is not None:
        extra = torch.zeros(rows.shape[0]) if bias is None else bias
        extra = extra.to(device=head.bias.device, dtype=head.bias.dtype)
        head.bias = nn.Parameter(torch.cat([head.bias.detach(), extra]), requires_grad=head.bias.requires_grad)
        head.decoder.out_features = emb.num_embeddings
        if not model.config.tie_word_embeddings:
            w = head.decoder.weight
            head.decoder.weight = nn.Parameter(torch.cat([w.detach(), rows.to(w.dtype)]), requires_grad=w.requires_grad)
        model.tie_weights()
    model.config.vocab_size = emb.num_embeddings


def train_rows_only(param: nn.Parameter, rows: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """Zero the gradient of every row of ``param`` outside ``rows`` (a bool mask over dim 0). With weight decay 0
    in its optimizer group, Adam then leaves those rows bit-identical (zero gradient, zero moments: zero update)."""
    keep = rows.to(torch.bool).clone()
    shape = (-1,) + (1,) * (param.dim() - 1)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * keep.to(grad.device).view(shape).to(grad.dtype)

    return param.register_hook(hook)


def _sample_normal(rows: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws from N(mean, covariance) of ``rows`` (float64; a small ridge keeps the covariance positive definite)."""
    x = rows.double()
    mean = x.mean(0)
    if x.shape[0] < 2:
        return mean.expand(n, -1).clone()
    cov = torch.cov(x.T) + 1e-6 * torch.eye(x.shape[1], dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    z = torch.randn(n, x.shape[1], generator=generator, dtype=torch.float64)
    return mean + z @ chol.T


def init_new_rows(method: str, weight: torch.Tensor, bias: torch.Tensor | None, old_tok: Tokenizer,
                  pieces: Sequence[str], reference: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial rows (K, hidden) and biases (K,) for ``pieces`` appended to ``old_tok``'s vocabulary; ``weight`` and
    ``bias`` are the model's old embedding matrix and LM bias (bias None: zeros), ``reference`` a bool mask of the
    rows whose statistics count (seen rows; never the special tokens). See the module docstring for the methods."""
    if method not in INIT_METHODS:
        raise ValueError(f"embedding initialisation {method!r}; expected one of {INIT_METHODS}")
    g = torch.Generator().manual_seed(seed)
    w = weight.detach().float().cpu()
    b = bias.detach().float().cpu() if bias is not None else torch.zeros(w.shape[0])
    ref = torch.as_tensor(reference, dtype=torch.bool)
    if int(ref.sum()) < 2:
        raise ValueError("too few reference rows to initialise new ones")
    old_pieces = [piece for piece, _ in _model_vocab(old_tok)][: w.shape[0]]
    out = torch.empty(len(pieces), w.shape[1], dtype=torch.float64)
    mean_bias = float(b[ref].mean())
    out_bias = torch.full((len(pieces),), mean_bias, dtype=torch.float64)
    if method == "mean":
        out[:] = _sample_normal(w[ref], len(pieces), g)
    else:
        by_script: dict[str, list[int]] = {}
        for i, piece in enumerate(old_pieces):
            if ref[i] and not piece.startswith(PLACEHOLDER):  # rows of another language's own vocabulary
                by_script.setdefault(piece_script(piece), []).append(i)
        scripts = [piece_script(p) for p in pieces]
        for script in sorted(set(scripts)):
            members = [k for k, s in enumerate(scripts) if s == script]
            source = by_script.get(script, [])
            rows = w[source] if len(source) >= 2 else w[ref]
            out[members] = _sample_normal(rows, len(members), g)
            if len(source) >= 2:
                out_bias[members] = float(b[source].mean())
    if method == "overlap":
        single = {p: k for k, p in enumerate(pieces) if len(p) == 1}
        drawn, drawn_bias = out.clone(), out_bias.clone()
        for k, piece in enumerate(pieces):
            if len(piece) == 1:
                continue
            parts, part_bias = [], []
            for token in old_tok.model.tokenize(piece):  # the model alone: no normaliser, no "▁" prepended
                if token.id != UNK_ID:
                    parts.append(w[token.id].double())
                    part_bias.append(float(b[token.id]))
                    continue
                chars = [single[c] for c in token.value if c in single]  # <unk> runs are fused: one per run
                if chars:
                    parts.append(drawn[chars].mean(0))
                    part_bias.append(float(drawn_bias[chars].mean()))
            if parts:
                out[k] = torch.stack(parts).mean(0)
                out_bias[k] = sum(part_bias) / len(part_bias)
    return out.to(weight.dtype), out_bias.to(weight.dtype)


# --- scoring per character ------------------------------------------------------------------------------------------
def mlm_loss_per_character(model: nn.Module, batches: Iterable[dict], lengths: np.ndarray) -> dict[str, float]:
    """Masked-LM loss of the masked pieces over the characters of the text they cover, comparable between two
    tokenisations of the same text (e.g. a language added with an extended vocabulary and the same language
    pre-trained with its own): {"loss": summed cross-entropy (nats), "chars": characters the scored targets cover,
    "targets": scored pieces, "nats_per_char", "bits_per_char"}, in eval mode. ``lengths``: ``piece_lengths`` of the
    tokenizer that made the batches ("▁" counts as the space it stands for; ``<unk>`` as nothing, so compare
    tokenisations without ``<unk>``)."""
    lengths_t = torch.as_tensor(np.asarray(lengths), dtype=torch.float64)
    device = next(model.parameters()).device
    total, chars, n = 0.0, 0.0, 0
    was_training = model.training
    model.eval()  # no dropout; the mode is restored below
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            labels = batch["labels"]
            targets = labels[labels != -100]
            if not targets.numel():
                continue
            logits = model(**batch).logits  # (N, V) at the scored positions
            total += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
            chars += float(lengths_t[targets.cpu()].sum())
            n += int(targets.numel())
    model.train(was_training)
    per_char = total / chars if chars else float("nan")
    return {"loss": total, "chars": chars, "targets": n, "nats_per_char": per_char,
            "bits_per_char": per_char / float(np.log(2))}
