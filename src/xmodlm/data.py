"""Pre-training data: per-language corpora read as streams, alpha sampling, packing, MLM masking, resumable batches.

A corpus is one file per language, `<code>.txt` or `<code>.txt.gz`, one sentence or document a line. Lines are
addressed by their index in the raw file, so the validation split ("the last N lines") holds the same content in
every language of a parallel corpus, and a read position is a (line, byte offset) pair that survives a restart.

Special-token ids are read off the tokenizer object (XLM-R convention: <s>, <pad>, </s>, <unk>, <mask>), so this
module does not import xmodlm.tokenizer; the tokenizer module imports this one to read its training sample.
"""
from __future__ import annotations

import gzip
import itertools
import logging
import math
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

CORPUS_SUFFIXES = (".txt.gz", ".txt")
IGNORE_INDEX = -100
# A corpus value: a file path, or a zero-argument callable returning an iterable of lines (e.g. a HF dataset stream).
CorpusSource = Union[str, os.PathLike, Callable[[], Iterable[str]]]


# ----------------------------------------------------------------------------------------------------------------
# Reading corpora

def discover_corpora(directory: str | os.PathLike) -> dict[str, Path]:
    """Map language code -> file for every `<code>.txt` / `<code>.txt.gz` in `directory`, sorted by code."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"corpus directory not found: {directory}")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        for suffix in CORPUS_SUFFIXES:
            if path.name.endswith(suffix) and path.is_file():
                code = path.name[: -len(suffix)]
                if code in found:
                    raise ValueError(f"language {code!r} has two corpus files: {found[code]} and {path}; keep one")
                found[code] = path
                break
    if not found:
        raise FileNotFoundError(f"no corpus files (<code>.txt or <code>.txt.gz) in {directory}")
    return dict(sorted(found.items()))


def _open_binary(path: Path):
    try:
        return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"corpus file not found: {path}") from None
    except OSError as e:
        raise OSError(f"cannot open corpus file {path}: {e}") from e


_LINE_COUNTS: dict[tuple[str, int, int], int] = {}


def count_lines(path: str | os.PathLike) -> int:
    """Number of lines in a (possibly gzipped) file, by a streaming pass; a last line without newline counts.

    Cached per (path, size, mtime) because every language is counted by each MLMBatches and validation split.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"corpus file not found: {path}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _LINE_COUNTS:
        return _LINE_COUNTS[key]
    n, last = 0, b"\n"
    with _open_binary(path) as f, tqdm(total=st.st_size, unit="B", unit_scale=True, desc=f"counting {path.name}",
                                        disable=st.st_size < 2**28, leave=False) as bar:
        try:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
                bar.update(len(chunk))
        except (OSError, EOFError, zlib.error) as e:
            raise OSError(f"cannot read corpus file {path}: {e}") from e
    n += last != b"\n"
    _LINE_COUNTS[key] = n
    return n


MAX_LINE_BYTES = 1 << 20  # longer lines are skipped (and counted): one 50 MB line would take gigabytes downstream


class CorpusReport:
    """Lines skipped while reading (invalid UTF-8, empty, longer than MAX_LINE_BYTES). All are counted per file and
    per kind, with the lines read, so that `summary()` gives totals; the first `max_logged` per file are kept in
    `issues` as "file:line: reason" and logged as warnings (a web corpus can hold millions of them)."""

    def __init__(self, max_logged: int = 20):
        self.max_logged = max_logged
        self.counts: Counter[str] = Counter()
        self.kinds: Counter[tuple[str, str]] = Counter()  # (file, kind) -> lines skipped
        self.read: Counter[str] = Counter()  # file -> lines read (usable or not)
        self.issues: list[str] = []

    def add(self, where: str, index: int, reason: str, kind: str | None = None) -> None:
        """Record line `index` (0-based) of `where`; messages use 1-based line numbers like editors do. `kind`: the
        reason without its details, for the totals (default: the reason up to " (")."""
        self.kinds[where, kind or reason.split(" (")[0]] += 1
        self.counts[where] += 1
        if self.counts[where] <= self.max_logged:
            msg = f"{where}:{index + 1}: {reason}; line skipped"
            self.issues.append(msg)
            log.warning(msg)
            if self.counts[where] == self.max_logged:
                log.warning(f"{where}: further skipped lines are counted, not logged")

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        """Per file: lines skipped, of how many read, and why, e.g. "a.txt: 970 of 1000 lines skipped (97.0%):
        970 invalid UTF-8"."""
        parts = []
        for where, n in sorted(self.counts.items()):
            why = ", ".join(f"{k} {kind}" for (w, kind), k in sorted(self.kinds.items()) if w == where)
            read = self.read.get(where, 0)
            of = f" of {read} lines" if read >= n else " lines"
            share = f" ({n / read:.1%})" if read >= n and read else ""
            parts.append(f"{where}: {n}{of} skipped{share}: {why}")
        return "; ".join(parts) or "no issues"


def read_lines(path: str | os.PathLike, start: int = 0, stop: int | None = None, *, offset: int | None = None,
               report: CorpusReport | None = None, max_line_bytes: int | None = None) -> Iterator[tuple[int, int, str]]:
    """Yield (line index, byte offset, stripped text) for the usable lines with start <= index < stop.

    offset: byte offset (in the decompressed stream) of line `start`, from an earlier read; seeking there avoids
    scanning the file from the top. Invalid UTF-8, empty lines and lines longer than `max_line_bytes` (default
    MAX_LINE_BYTES; such a line is never held in memory whole) go to `report` and are skipped.
    """
    path = Path(path)
    report = CorpusReport() if report is None else report
    limit = MAX_LINE_BYTES if max_line_bytes is None else max_line_bytes
    where = str(path)
    f = _open_binary(path)
    index, pos = 0, 0
    try:
        with f:
            if offset is not None and start > 0:
                f.seek(offset)
                index, pos = start, offset
            while raw := f.readline(limit + 1):
                if stop is not None and index >= stop:
                    return
                if len(raw) > limit and not (len(raw) == limit + 1 and raw.endswith(b"\n")):
                    length = len(raw)
                    while not raw.endswith(b"\n") and (raw := f.readline(1 << 20)):  # the rest, a MiB at a time
                        length += len(raw)
                    if index >= start:
                        report.read[where] += 1
                        report.add(where, index, f"longer than {limit} bytes ({length} bytes)", "too long")
                    pos += length
                    index += 1
                    continue
                if index >= start:
                    report.read[where] += 1
                    try:
                        text = raw.decode("utf-8").strip()
                    except UnicodeDecodeError as e:
                        report.add(where, index, f"invalid UTF-8 ({e.reason} at byte {e.start})")
                    else:
                        if text:
                            yield index, pos, text
                        else:
                            report.add(where, index, "empty line")
                pos += len(raw)
                index += 1
    except (OSError, EOFError, zlib.error) as e:
        raise OSError(f"cannot read corpus file {path} at line {index + 1}: {e}") from e


def hf_dataset_lines(name: str, config: str | None = None, split: str = "train",
                     text_field: str = "text") -> Iterator[str]:
    """Lines of a Hugging Face dataset, streamed (e.g. `hf_dataset_lines("cc100", "sw")`); needs `datasets` and a
    network. Use as a corpus value: `{"sw_KE": functools.partial(hf_dataset_lines, "cc100", "sw")}`."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("hf_dataset_lines needs the `datasets` package: pip install 'xmodlm[hub]'") from e
    stream = datasets.load_dataset(name, config, split=split, streaming=True)

    def lines() -> Iterator[str]:
        for example in stream:
            yield from str(example[text_field]).split("\n")
    return lines()


class _FileSource:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(self.path)

    def count(self) -> int:
        return count_lines(self.path)

    def lines(self, start: int, stop: int, offset: int | None, report: CorpusReport) -> Iterator[tuple]:
        return read_lines(self.path, start, stop, offset=offset, report=report)


class _IterableSource:
    """Lines from a callable; there is no byte offset, so reopening at line k re-iterates k lines."""

    def __init__(self, factory: Callable[[], Iterable[str]], name: str):
        self.factory, self.name = factory, name

    def count(self) -> int:
        return sum(1 for _ in self.factory())

    def lines(self, start: int, stop: int, offset: int | None, report: CorpusReport) -> Iterator[tuple]:
        for index, text in enumerate(itertools.islice(self.factory(), start, stop), start):
            text = text.strip()
            report.read[self.name] += 1
            if len(text) > MAX_LINE_BYTES // 4 and len(text.encode("utf-8")) > MAX_LINE_BYTES:
                report.add(self.name, index, f"longer than {MAX_LINE_BYTES} bytes", "too long")
            elif text:
                yield index, None, text
            else:
                report.add(self.name, index, "empty line")


def _sources(corpora: Mapping[str, CorpusSource] | str | os.PathLike,
             languages: Sequence[str]) -> list[_FileSource | _IterableSource]:
    if isinstance(corpora, (str, os.PathLike)):
        corpora = discover_corpora(corpora)
    if not languages:
        raise ValueError("languages is empty; name at least one language code")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages lists a code twice: {list(languages)}")
    missing = [code for code in languages if code not in corpora]
    if missing:
        raise KeyError(f"no corpus for language(s) {missing}; corpora have {sorted(corpora)}")
    out = []
    for code in languages:
        value = corpora[code]
        if isinstance(value, (str, os.PathLike)):
            out.append(_FileSource(value))
        elif callable(value):
            out.append(_IterableSource(value, f"<{code} lines>"))
        else:
            raise TypeError(f"corpus for {code!r} is a {type(value).__name__}; expected a path or a callable "
                            "returning an iterable of lines")
    return out


def _line_counts(sources, languages, line_counts: Mapping[str, int] | None, skip_lines: int) -> list[int]:
    """Training lines per language: all lines but the last `skip_lines` (the validation tail)."""
    counts = []
    for code, source in zip(languages, sources):
        total = (line_counts or {}).get(code)
        total = source.count() if total is None else int(total)
        if total <= skip_lines:
            held_out = f", all held out for validation (skip_lines={skip_lines})" if skip_lines else ""
            raise ValueError(f"{source.name} has {total} lines{held_out}; none is left for training")
        counts.append(total - skip_lines)
    return counts


def sampling_probs(sizes: Sequence[int], alpha: float) -> np.ndarray:
    """p_l proportional to n_l ** alpha (XLM-R: alpha 0.3 up-samples small languages; 1 keeps natural rates)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.size == 0 or (sizes <= 0).any():
        raise ValueError(f"sampling needs a positive size for every language, got {sizes.tolist()}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    weights = sizes ** alpha
    return weights / weights.sum()


# ----------------------------------------------------------------------------------------------------------------
# Tokenising, masking

def _special_ids(tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer lacks the XLM-R special token(s) {missing}")
    return ids


def encode_lines(tokenizer, lines: Sequence[str], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `lines`, each followed by </s>, as one flat int32 array, and each line's length (with </s>)."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # _fast skips offsets (tokenizers>=0.20)
    ids = [e.ids for e in encode(list(lines), add_special_tokens=False)]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    out = np.full(int(lengths.sum()), eos_id, dtype=np.int32)
    is_token = np.ones(out.size, dtype=bool)
    is_token[np.cumsum(lengths) - 1] = False
    out[is_token] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(is_token.sum()))
    return out, lengths


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator | None, mask_prob: float = 0.15, *,
                first_regular_id: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: each non-special position is chosen with probability `mask_prob`; a chosen token becomes <mask>
    (80%), a random regular token (10%) or stays (10%). Returns (inputs, labels), labels -100 where not chosen.

    input_ids, special_mask: (B, T) long / bool; generator on their device (None: torch's global one). Random
    tokens are drawn from [first_regular_id, vocab_size) without the mask id, i.e. never <s>, <pad>, </s>, <unk> or
    <mask> under the XLM-R layout.
    """
    # One uniform draw decides both: u < p chooses the position, and u / p (uniform on [0, 1) given u < p) picks
    # the replacement, so masking costs two random tensors instead of three.
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    chosen = (u < mask_prob) & ~special_mask
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    inputs = torch.where(chosen & (u < 0.8 * mask_prob), mask_id, input_ids)
    mask_is_regular = first_regular_id <= mask_id < vocab_size
    high = vocab_size - 1 if mask_is_regular else vocab_size
    if high <= first_regular_id:
        raise ValueError(f"vocab_size {vocab_size} leaves no regular token above id {first_regular_id}")
    random_ids = torch.randint(first_regular_id, high, input_ids.shape, generator=generator, dtype=input_ids.dtype,
                               device=input_ids.device)
    if mask_is_regular:
        random_ids += random_ids >= mask_id  # skip over the mask id
    use_random = chosen & (u >= 0.8 * mask_prob) & (u < 0.9 * mask_prob)
    return torch.where(use_random, random_ids, inputs), labels


def _special_mask(ids: torch.Tensor, special: dict[str, int]) -> torch.Tensor:
    # <mask> too: a corpus line can contain the literal string, and it must never be a target.
    return torch.isin(ids, torch.tensor([special[t] for t in ("<s>", "<pad>", "</s>", "<mask>")]))


def _derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers; different tuples give independent streams (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------------------------------------
# Packed, masked, per-language batches

class _TokenStream:
    """The endless token stream of one language: its training lines in order, each followed by </s>, wrapping
    around at the end (a new epoch). Tokens are encoded `chunk_lines` lines at a time into a bounded buffer; an
    epoch of at most `cache_tokens` tokens is kept after it was first read, so small corpora are encoded once.

    The position is small and exact: the line holding the next token (index, byte offset, epoch) and how many of its
    tokens were consumed. Resuming re-reads and re-encodes that line, which gives the same tokens.
    """

    def __init__(self, source, n_lines: int, tokenizer, eos_id: int, chunk_lines: int, cache_tokens: int,
                 report: CorpusReport):
        self.source, self.n_lines, self.tokenizer, self.eos_id = source, n_lines, tokenizer, eos_id
        self.chunk_lines, self.cache_tokens, self.report = chunk_lines, cache_tokens, report
        self._quiet = CorpusReport(max_logged=0)  # after the first epoch the same bad lines are not reported again
        self.buf = np.empty(0, dtype=np.int32)
        self.head = 0  # next unread token in buf
        # One row per line in buf: where its tokens start in buf, and where to reopen the corpus to read it again.
        self.starts = np.empty(0, dtype=np.int64)
        self.where = np.empty((0, 3), dtype=np.int64)  # line index, byte offset (-1: none), epoch
        self._reader: Iterator | None = None
        self._open_at = (0, 0, 0)  # (line, offset, epoch) for the next reader
        self._skip = 0  # tokens of the first line read that were consumed before a resume
        self._epoch_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # tokens, starts, (line, offset)
        self._collect: list | None = None  # chunks of an epoch being read from its first line, while it may fit

    def take(self, n: int) -> np.ndarray:
        while self.buf.size - self.head < n:
            self._fill()
        out = self.buf[self.head:self.head + n]
        self.head += n
        return out

    def _fill(self) -> None:
        if self.starts.size:  # drop consumed tokens, keeping the line that holds head (its start may go negative)
            k = int(np.searchsorted(self.starts, self.head, side="right")) - 1
            self.starts, self.where = self.starts[k:] - self.head, self.where[k:]
            self.buf, self.head = self.buf[self.head:], 0
        if self._reader is None and self._open_at[0] == 0 and self._epoch_cache is not None:
            tokens, starts, where = self._epoch_cache
            epoch = self._open_at[2]
            self._append(tokens, starts, np.column_stack([where, np.full(len(where), epoch)]))
            self._open_at = (0, 0, epoch + 1)
            return
        texts, where, epoch_done = self._read_chunk()
        tokens, lengths = encode_lines(self.tokenizer, texts, self.eos_id)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        where = np.asarray(where, dtype=np.int64)
        if self._skip:
            if self.buf.size or self._skip > lengths[0]:
                raise ValueError(f"{self.source.name}: resume state skips {self._skip} tokens of line "
                                 f"{where[0, 0] + 1}, which has {lengths[0]}; the corpus or tokenizer changed "
                                 "since it was saved")
            self.head, self._skip = self._skip, 0
        self._append(tokens, starts, where)
        if self._collect is not None:
            self._collect.append((tokens, starts, where[:, :2]))
            if sum(t.size for t, _, _ in self._collect) > self.cache_tokens:
                self._collect, self.cache_tokens = None, -1  # too big to keep: stop trying
            elif epoch_done:
                offsets = np.cumsum([0] + [t.size for t, _, _ in self._collect[:-1]])
                self._epoch_cache = (np.concatenate([t for t, _, _ in self._collect]),
                                     np.concatenate([s + o for (_, s, _), o in zip(self._collect, offsets)]),
                                     np.concatenate([w for _, _, w in self._collect]))
                self._collect = None

    def _read_chunk(self) -> tuple[list[str], list[tuple[int, int, int]], bool]:
        """Up to chunk_lines usable lines, ending early at the end of an epoch (then epoch_done is True)."""
        texts, where = [], []
        while len(texts) < self.chunk_lines:
            if self._reader is None:
                line, offset, epoch = self._open_at
                report = self.report if epoch == 0 else self._quiet
                self._reader = self.source.lines(line, self.n_lines, None if offset < 0 else offset, report)
                self._reader_epoch, self._reader_lines = epoch, 0
                from_top = line == 0 and self._epoch_cache is None and self.cache_tokens >= 0
                self._collect = [] if from_top else None
            item = next(self._reader, None)
            if item is None:
                if self._open_at[0] == 0 and self._reader_lines == 0:
                    raise ValueError(f"{self.source.name}: none of its {self.n_lines} training lines is usable")
                self._reader = None
                self._open_at = (0, 0, self._reader_epoch + 1)
                if texts:
                    return texts, where, True
                continue
            index, offset, text = item
            self._reader_lines += 1
            texts.append(text)
            where.append((index, -1 if offset is None else offset, self._reader_epoch))
        return texts, where, False

    def _append(self, tokens: np.ndarray, starts: np.ndarray, where: np.ndarray) -> None:
        self.starts = np.concatenate([self.starts, starts + self.buf.size])
        self.buf = np.concatenate([self.buf, tokens])
        self.where = np.concatenate([self.where, where])

    def state_dict(self) -> dict:
        if not self.starts.size:  # nothing read since construction or a resume
            line, offset, epoch = self._open_at
            return {"line": line, "offset": offset, "epoch": epoch, "skip": self._skip}
        k = int(np.searchsorted(self.starts, self.head, side="right")) - 1
        line, offset, epoch = (int(v) for v in self.where[k])
        return {"line": line, "offset": offset, "epoch": epoch, "skip": int(self.head - self.starts[k])}

    def load_state_dict(self, state: Mapping) -> None:
        self.close()
        self.buf, self.head = np.empty(0, dtype=np.int32), 0
        self.starts, self.where = np.empty(0, dtype=np.int64), np.empty((0, 3), dtype=np.int64)
        self._open_at = (int(state["line"]), int(state["offset"]), int(state["epoch"]))
        self._skip = int(state["skip"])
        if not 0 <= self._open_at[0] < self.n_lines:
            raise ValueError(f"{self.source.name}: resume line {self._open_at[0] + 1} is outside its "
                             f"{self.n_lines} training lines")

    @property
    def epoch(self) -> float:
        """Epochs completed, with the fraction of the current one (by line index)."""
        state = self.state_dict()
        return state["epoch"] + state["line"] / self.n_lines

    def close(self) -> None:
        if self._reader is not None and hasattr(self._reader, "close"):
            self._reader.close()
        self._reader = None


class MLMBatches:
    """Endless iterator of masked-LM batches packed from per-language corpora.

    corpora: code -> path (or callable returning lines), or a directory for discover_corpora.
    languages: the codes used; lang_ids are indexes into this list, so its order must be the model's languages.
    mode: "per_language" (every batch one language, drawn with p_l ~ n_l^alpha: X-Mod/XLM-R pre-training) or
        "mixed" (every row's language drawn independently).
    batch_size: the GLOBAL batch. Every rank computes the whole batch and keeps rows rank::world_size, so the
        concatenated batch is the same for any world_size and one saved state resumes any of them.
    skip_lines: the last `skip_lines` lines of every corpus are not used (the validation tail; see
        validation_batches). n_l counts the remaining lines.
    line_counts: code -> total line count, to spare the counting pass (needed for endless callables).
    count_tokens: keep `token_counts`, how often each id occurred in the global batches drawn so far (before masking;
        <s> and </s> included): the per-row counts a checkpoint records (xmodlm.vocab). They are part of the state,
        so a resumed run ends with the counts of an uninterrupted one.
    chunk_lines: lines encoded per call of the tokenizer; epoch_cache_tokens: a language whose training lines hold at
        most this many tokens is encoded once and replayed from memory (int32) in later epochs.

    Each row is <s> + seq_len-2 tokens of the language's stream (lines in order, each ended by </s>) + </s>; the
    rest of a line carries into the next row of that language, so rows are always full and never padded.
    Batches: input_ids, attention_mask, labels (-100 where not predicted) as (B/world_size, seq_len) long,
    lang_ids (B/world_size,) long. Batch i depends only on the seed, i and the read positions: state_dict() after
    k batches, loaded into a new object, gives exactly the batches k+1, k+2, ... of an uninterrupted run.
    """

    MODES = ("per_language", "mixed")

    def __init__(self, corpora: Mapping[str, CorpusSource] | str | os.PathLike, tokenizer, languages: Sequence[str],
                 seq_len: int, batch_size: int, *, alpha: float = 0.3, seed: int = 0, mode: str = "per_language",
                 mask_prob: float = 0.15, rank: int = 0, world_size: int = 1, skip_lines: int = 0,
                 line_counts: Mapping[str, int] | None = None, chunk_lines: int = 1024,
                 epoch_cache_tokens: int = 1 << 22, report: CorpusReport | None = None, count_tokens: bool = False):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if seq_len < 3:
            raise ValueError(f"seq_len must be >= 3 (<s>, a token, </s>), got {seq_len}")
        if not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must split evenly over world_size {world_size} "
                             f"and 0 <= rank < world_size (rank {rank})")
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.languages = list(languages)
        self.tokenizer, self.seq_len, self.batch_size, self.mode = tokenizer, seq_len, batch_size, mode
        self.seed, self.mask_prob, self.rank, self.world_size, self.alpha = seed, mask_prob, rank, world_size, alpha
        self.special = _special_ids(tokenizer)
        self.vocab_size = tokenizer.get_vocab_size()
        self.report = CorpusReport() if report is None else report
        sources = _sources(corpora, self.languages)
        self.line_counts = _line_counts(sources, self.languages, line_counts, skip_lines)
        self.probs = sampling_probs(self.line_counts, alpha)
        self.streams = [_TokenStream(src, n, tokenizer, self.special["</s>"], chunk_lines, epoch_cache_tokens,
                                     self.report) for src, n in zip(sources, self.line_counts)]
        self.step = 0
        self.token_counts = np.zeros(self.vocab_size, dtype=np.int64) if count_tokens else None

    def __iter__(self) -> MLMBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.step])
        B, T, n_langs = self.batch_size, self.seq_len, len(self.languages)
        if self.mode == "per_language":
            langs = np.full(B, rng.choice(n_langs, p=self.probs))
            body = self.streams[langs[0]].take(B * (T - 2)).reshape(B, T - 2)
        else:
            langs = rng.choice(n_langs, size=B, p=self.probs)
            body = np.stack([self.streams[lang].take(T - 2) for lang in langs])
        ids = np.empty((B, T), dtype=np.int64)
        ids[:, 0], ids[:, 1:-1], ids[:, -1] = self.special["<s>"], body, self.special["</s>"]
        if self.token_counts is not None:
            self.token_counts += np.bincount(ids.ravel(), minlength=self.vocab_size)[: self.vocab_size]
        ids = torch.from_numpy(ids)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        inputs, labels = mask_tokens(ids, _special_mask(ids, self.special), self.special["<mask>"], self.vocab_size,
                                     generator, self.mask_prob)
        self.step += 1
        rows = slice(self.rank, None, self.world_size)
        return {"input_ids": inputs[rows], "attention_mask": torch.ones_like(inputs[rows]), "labels": labels[rows],
                "lang_ids": torch.from_numpy(langs)[rows]}

    def _fingerprint(self) -> dict:
        return {"languages": self.languages, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "mode": self.mode, "seed": self.seed, "alpha": self.alpha, "mask_prob": self.mask_prob,
                "line_counts": self.line_counts}

    def state_dict(self) -> dict:
        """Plain, JSON-able: batches produced, per-language read positions, and the settings they depend on (with
        count_tokens also "token_counts", an int64 tensor)."""
        state = {"version": 1, "step": self.step, **self._fingerprint(),
                 "streams": {code: s.state_dict() for code, s in zip(self.languages, self.streams)}}
        if self.token_counts is not None:
            state["token_counts"] = torch.from_numpy(self.token_counts.copy())
        return state

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown MLMBatches state version {state.get('version')!r}")
        for key, value in self._fingerprint().items():
            if state[key] != value:
                raise ValueError(f"MLMBatches state was saved with {key}={state[key]!r}, this run has {value!r}; "
                                 "exact resume needs the same data settings and corpora")
        for code, stream in zip(self.languages, self.streams):
            stream.load_state_dict(state["streams"][code])
        self.step = int(state["step"])
        if self.token_counts is not None:
            counts = state.get("token_counts")
            if counts is None or len(counts) != self.vocab_size:
                log.warning("MLMBatches state holds no token counts for this vocabulary: counting restarts at "
                            "batch %d, so the counts will miss the batches before it", self.step)
                self.token_counts[:] = 0
            else:
                self.token_counts[:] = np.asarray(counts, dtype=np.int64)

    def epochs(self) -> dict[str, float]:
        """Epochs read per language (completed + fraction), for logging."""
        return {code: s.epoch for code, s in zip(self.languages, self.streams)}

    def close(self) -> None:
        for stream in self.streams:
            stream.close()


# ----------------------------------------------------------------------------------------------------------------
# Validation

def validation_batches(corpora: Mapping[str, CorpusSource] | str | os.PathLike, tokenizer, languages: Sequence[str],
                       seq_len: int, batch_size: int, valid_lines: int = 200, max_batches: int | None = None,
                       seed: int = 0, *, mask_prob: float = 0.15, line_counts: Mapping[str, int] | None = None,
                       report: CorpusReport | None = None) -> dict[str, list[dict[str, torch.Tensor]]]:
    """code -> batches of the last `valid_lines` lines of that language, packed like training rows; the last row is
    padded (attention_mask 0, labels -100). Masking uses a generator seeded from (seed, code), so the batches, and
    with them validation perplexity, are the same at every step and do not change when languages are added."""
    special = _special_ids(tokenizer)
    sources = _sources(corpora, languages)
    report = CorpusReport() if report is None else report
    totals = [n + valid_lines for n in _line_counts(sources, languages, line_counts, valid_lines)]
    width = seq_len - 2
    out = {}
    for lang_id, (code, source, total) in enumerate(zip(languages, sources, totals)):
        texts = [text for _, _, text in source.lines(total - valid_lines, total, None, report)]
        if not texts:
            raise ValueError(f"{source.name}: none of its last {valid_lines} lines is usable for validation")
        tokens = encode_lines(tokenizer, texts, special["</s>"])[0][:-1]  # the row's own </s> ends the last line
        n_rows = math.ceil(tokens.size / width)
        if max_batches is not None:
            n_rows = min(n_rows, max_batches * batch_size)
            tokens = tokens[: n_rows * width]
        body = np.full(n_rows * width, special["<pad>"], dtype=np.int64)
        body[: tokens.size] = tokens
        ids = np.full((n_rows, seq_len), special["<pad>"], dtype=np.int64)
        ids[:, 0], ids[:, 1:-1], ids[:-1, -1] = special["<s>"], body.reshape(n_rows, width), special["</s>"]
        last = tokens.size - (n_rows - 1) * width  # content length of the last row
        ids[-1, last + 1] = special["</s>"]
        attention = np.ones_like(ids)
        attention[-1, last + 2:] = 0
        ids, attention = torch.from_numpy(ids), torch.from_numpy(attention)
        out[code] = []
        for i, first in enumerate(range(0, n_rows, batch_size)):
            rows = slice(first, first + batch_size)
            # One generator per batch, so max_batches only drops batches and never changes the ones kept.
            generator = torch.Generator().manual_seed(_derived_seed(seed, zlib.crc32(code.encode()), i))
            inputs, labels = mask_tokens(ids[rows], _special_mask(ids[rows], special), special["<mask>"],
                                         tokenizer.get_vocab_size(), generator, mask_prob)
            out[code].append({"input_ids": inputs, "attention_mask": attention[rows], "labels": labels,
                              "lang_ids": torch.full((inputs.shape[0],), lang_id, dtype=torch.long)})
    return out
