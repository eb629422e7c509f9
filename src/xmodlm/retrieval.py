"""Cross-lingual sentence retrieval: parallel data, nearest-neighbour search, accuracy@k, the contrastive loss.

Parallel data comes in two layouts, told apart by the files:
  * line-aligned (Tatoeba's ``xx-en.xx`` / ``xx-en.en``): line i of one file translates line i of the other;
  * id-aligned (``../shared/data/bible``: ``<code>.txt`` with ``<code>.ids`` beside it, one verse id a line): a pair
    is two lines with the same id, whatever their line numbers; ids present on one side only are left out.
Pairs where either side is blank are left out, and so are ids that occur twice in a file.

Scores follow XTREME's Tatoeba/BUCC evaluation: each sentence of one side is a query, every sentence of the other
side a candidate; accuracy@k is the percentage of queries whose translation is among their k best candidates. The
candidates are ranked by cosine (embeddings normalised, so a dot product), or by the ratio margin of Artetxe &
Schwenk (2019), which parallel-data mining uses:

    margin(x, y) = cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k)

with NN_k(x) the k nearest candidates of x on the other side (k=4 by default). As in LASER's mining, the margin
re-ranks the ``candidates`` (default 32) nearest neighbours by cosine; a translation outside them counts as missed.

Search is exact either way: in torch, queries in blocks so that memory stays bounded whatever the number of sentences
(at most 2,048 queries and 2^25 scores a block), or with faiss (``IndexFlatIP``, exact inner product) when it is
installed; both return the same neighbours (tested). ``faiss`` is optional: pip install faiss-cpu.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .embeddings import forward_pooled, resolve_layer
from .model import XmodPreTrainedModel
from .tasks import read_lines

SCORINGS = ("cosine", "margin")
SEARCHES = ("auto", "torch", "faiss")
KS = (1, 5, 10)
MARGIN_K = 4
CANDIDATES = 32
CHUNK = 2048  # at most this many queries per similarity block in torch ...
BLOCK = 1 << 25  # ... and at most this many scores (128 MiB of float32), so that memory stays bounded


# ---------------------------------------------------------------- parallel data


@dataclass(frozen=True)
class Side:
    """One language's file: its texts and, for an id-aligned file, the id of each line (None: line-aligned)."""

    path: Path
    texts: list[str]
    ids: list[str] | None


def ids_file(path: str | Path) -> Path | None:
    """The ids file of an id-aligned text file (``x.txt`` -> ``x.ids``), or None when there is none."""
    path = Path(path)
    candidate = path.with_suffix(".ids")
    return candidate if path.suffix == ".txt" and candidate.is_file() else None


def read_side(path: str | Path) -> Side:
    """A text file, with its ids when ``<stem>.ids`` is beside a ``<stem>.txt`` (which must then have a line each)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (one sentence a line)")
    texts = [line for _, line in read_lines(path)]
    ids_path = ids_file(path)
    ids = None
    if ids_path is not None:
        ids = [line.strip() for _, line in read_lines(ids_path)]
        if len(ids) != len(texts):
            raise ValueError(f"{ids_path} has {len(ids)} ids for the {len(texts)} lines of {path}")
    return Side(path, texts, ids)


@dataclass(frozen=True)
class Pairs:
    """Aligned translation pairs: ``src[i]`` and ``tgt[i]`` translate each other; ``keys[i]`` names the pair (its
    verse id, or its line number)."""

    keys: list[str]
    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, rows: slice | Sequence[int]) -> "Pairs":
        rows = range(len(self))[rows] if isinstance(rows, slice) else rows
        return Pairs([self.keys[i] for i in rows], [self.src[i] for i in rows], [self.tgt[i] for i in rows])


def _unique(ids: Sequence[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    twice = set()
    for i, key in enumerate(ids):
        if key in seen:
            twice.add(key)
        seen[key] = i
    return {key: i for key, i in seen.items() if key not in twice}


def align(src: Side, tgt: Side) -> Pairs:
    """Translation pairs of two files: by id (both id-aligned) or by line (neither), in the source's order."""
    if (src.ids is None) != (tgt.ids is None):
        with_ids, without = (src, tgt) if src.ids is not None else (tgt, src)
        raise ValueError(f"{with_ids.path} is id-aligned ({ids_file(with_ids.path)}) but {without.path} has no ids "
                         "file: give two id-aligned files (x.txt + x.ids) or two line-aligned ones")
    if src.ids is None:
        if len(src.texts) != len(tgt.texts):
            raise ValueError(f"{src.path} has {len(src.texts)} lines and {tgt.path} {len(tgt.texts)}: line-aligned "
                             "files must have a line each (or give .ids files to align by id)")
        rows = [(str(i + 1), i, i) for i in range(len(src.texts))]
    else:
        src_at, tgt_at = _unique(src.ids), _unique(tgt.ids)
        rows = [(key, i, tgt_at[key]) for key, i in src_at.items() if key in tgt_at]
        rows.sort(key=lambda row: row[1])
    rows = [(key, i, j) for key, i, j in rows if src.texts[i].strip() and tgt.texts[j].strip()]
    return Pairs([k for k, _, _ in rows], [src.texts[i] for _, i, _ in rows], [tgt.texts[j] for _, _, j in rows])


def read_pairs(src_path: str | Path, tgt_path: str | Path) -> Pairs:
    return align(read_side(src_path), read_side(tgt_path))


# ---------------------------------------------------------------- search


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_search(search: str) -> str:
    """"torch" or "faiss" for a --search value ("auto": faiss when installed)."""
    if search not in SEARCHES:
        raise ValueError(f"search {search!r}: expected one of {', '.join(SEARCHES)}")
    if search == "auto":
        return "faiss" if faiss_available() else "torch"
    if search == "faiss" and not faiss_available():
        raise ValueError("search 'faiss' needs the faiss package (pip install faiss-cpu); 'torch' searches exactly "
                         "without it")
    return search


def knn(queries: torch.Tensor, keys: torch.Tensor, k: int, search: str = "torch",
        chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), each (Q, k): the k largest dot products of each query with the keys, best first."""
    k = min(k, keys.shape[0])
    queries, keys = queries.float().contiguous(), keys.float().contiguous()
    if resolve_search(search) == "faiss":
        import faiss

        index = faiss.IndexFlatIP(keys.shape[1])
        index.add(keys.numpy())
        scores, indices = index.search(queries.numpy(), k)
        return torch.from_numpy(scores), torch.from_numpy(indices).long()
    scores, indices = [], []
    chunk = max(1, min(chunk, BLOCK // max(1, keys.shape[0])))
    for start in range(0, queries.shape[0], chunk):
        s, i = (queries[start:start + chunk] @ keys.T).topk(k, dim=1)
        scores.append(s)
        indices.append(i)
    if not scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)


def rank(queries: torch.Tensor, keys: torch.Tensor, k: int, scoring: str = "cosine", margin_k: int = MARGIN_K,
         candidates: int = CANDIDATES, search: str = "torch") -> torch.Tensor:
    """(Q, k) indices of each query's k best keys, best first, by cosine or by the ratio margin (module docstring).
    Queries and keys must be unit vectors for the scores to be cosines."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring {scoring!r}: expected one of {', '.join(SCORINGS)}")
    if scoring == "cosine":
        return knn(queries, keys, k, search)[1]
    if margin_k < 1:
        raise ValueError(f"margin_k={margin_k}; it must be >= 1")
    sims, idx = knn(queries, keys, max(k, margin_k, candidates), search)
    forward = sims[:, :margin_k].mean(1)  # each query's mean cosine to its margin_k nearest keys
    backward = knn(keys, queries, margin_k, search)[0].mean(1)  # each key's, to its nearest queries
    margin = sims / ((forward[:, None] + backward[idx]) / 2)
    order = margin.argsort(dim=1, descending=True, stable=True)
    return idx.gather(1, order)[:, :k]


def accuracy_at(ranked: torch.Tensor, ks: Sequence[int] = KS) -> dict[int, float]:
    """{k: percentage of rows i whose key i is among the first k of ranked[i]}."""
    gold = torch.arange(ranked.shape[0])[:, None]
    hits = ranked == gold
    n = max(len(ranked), 1)
    return {k: 100.0 * int(hits[:, :k].any(1).sum()) / n for k in ks}


def scores(src: torch.Tensor, tgt: torch.Tensor, ks: Sequence[int] = KS, scoring: str = "cosine",
           margin_k: int = MARGIN_K, candidates: int = CANDIDATES, search: str = "torch") -> dict[str, float]:
    """Accuracy@k in both directions of aligned embeddings (row i of src translates row i of tgt):
    "acc@k" for src queries searching tgt, "rev@k" for tgt queries searching src."""
    if src.shape != tgt.shape:
        raise ValueError(f"src and tgt embeddings differ in shape: {tuple(src.shape)} and {tuple(tgt.shape)}")
    search = resolve_search(search)
    k = max(ks)
    out = {}
    for name, (q, c) in (("acc", (src, tgt)), ("rev", (tgt, src))):
        for at, value in accuracy_at(rank(q, c, k, scoring, margin_k, candidates, search), ks).items():
            out[f"{name}@{at}"] = value
    return out


def metric_names(ks: Sequence[int] = KS) -> tuple[str, ...]:
    return tuple(f"acc@{k}" for k in ks) + tuple(f"rev@{k}" for k in ks)


# ---------------------------------------------------------------- contrastive fine-tuning


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor
    logits: torch.Tensor  # (B, B) scaled cosines, source rows against target columns


def info_nce(src: torch.Tensor, tgt: torch.Tensor, temperature: float,
             keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric in-batch InfoNCE of unit vectors: row i of src and tgt are a pair, every other row a negative.
    Rows with the same key (the same sentence twice in a batch) are not negatives of each other."""
    logits = src @ tgt.T / temperature
    if keys is not None:
        same = (keys[:, None] == keys[None, :]) & ~torch.eye(len(keys), dtype=torch.bool, device=keys.device)
        logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(len(src), device=src.device)
    loss = (F.cross_entropy(logits.float(), labels) + F.cross_entropy(logits.T.float(), labels)) / 2
    return loss, logits


class ContrastiveModel(torch.nn.Module):
    """A checkpoint's model trained with ``info_nce`` on pooled states of one layer, for the one Trainer.

    forward takes a batch of pairs (``input_ids``/``attention_mask``/``lang_ids`` for the sources, ``pair_*`` for
    the targets, ``keys`` to spot repeated sentences) and returns ``.loss``. The weights are the wrapped model's:
    ``state_dict`` and ``save_pretrained`` are its own (no prefix), so the trainer's checkpoints and the exported
    directory are a plain checkpoint of the wrapped class."""

    def __init__(self, model: XmodPreTrainedModel, layer: int | None = None, pooling: str = "mean",
                 temperature: float = 0.05):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature={temperature}; it must be > 0")
        self.model, self.pooling, self.temperature = model, pooling, temperature
        self.layer = resolve_layer(layer, model.config)
        self.config = model.config

    def forward(self, input_ids, attention_mask, lang_ids, pair_input_ids, pair_attention_mask, pair_lang_ids,
                keys=None) -> ContrastiveOutput:
        src = forward_pooled(self.model, input_ids, attention_mask, lang_ids, [self.layer], self.pooling)[0]
        tgt = forward_pooled(self.model, pair_input_ids, pair_attention_mask, pair_lang_ids, [self.layer],
                             self.pooling)[0]
        return ContrastiveOutput(*info_nce(src, tgt, self.temperature, keys))

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def save_pretrained(self, directory) -> None:
        self.model.save_pretrained(directory)
