"""``xmodlm embed``: sentence embeddings of text files, written as NumPy arrays with the line ids.

Each --data CODE=FILE (one sentence a line) is embedded through CODE's module (``--fallback`` for a language the
model lacks; ``auto`` identifies each line's language) and written to ``--out``: one file ``<CODE>.npy`` (float32,
lines x hidden; float16 with --dtype float16) and ``<CODE>.ids.txt`` (the id of each row: the line's id from
``<stem>.ids`` beside ``<stem>.txt``, else its 1-based line number) per language, plus ``embeddings.json`` saying how
they were made. Blank lines are embedded like any other (the row count is the line count). ``numpy.load`` reads the
arrays; rows are unit vectors unless --no-normalize.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import embeddings as emb_mod
from .. import languages as lang_mod
from ..config import XmodConfig
from ..files import atomic_write, atomic_write_text
from ..model import load_pretrained
from ..retrieval import read_side
from ..settings import check_ranges, setting
from ..tokenizer import load_model_tokenizers
from ..weights import resolve_pretrained
from .evaluate import choose_modules, parse_data, resolve_device

logger = logging.getLogger(__name__)


def _dtype(value: str) -> None:
    if value not in ("float32", "float16"):
        raise ValueError(f"{value!r}; expected float32 or float16")


@dataclass
class EmbedSettings:
    model: str = setting("", "checkpoint directory (pre-trained or fine-tuned) or hub id")
    data: list[str] = setting([], "CODE=FILE, one sentence a line; CODE picks the module ('auto' identifies each "
                                  "line's language)")
    out_dir: str = setting("runs/embed", "output directory: <CODE>.npy, <CODE>.ids.txt, embeddings.json",
                           flags=("--out",))
    tokenizer: str | None = setting(None, "tokenizer directory (default: the model's directory)")
    layer: int | None = setting(None, "layer whose states are pooled, 0 = embeddings, -1 = last (default: "
                                      "fine-tuning's for a retrieval fine-tune, else the middle layer)",
                                  low=-257, high=256)
    pooling: str | None = setting(None, "mean | cls (default: fine-tuning's, else mean)")
    normalize: bool = setting(True, "scale every embedding to unit length (dot product = cosine)")
    batch_size: int = setting(64, "texts per forward pass (sorted by length)", low=1)
    max_length: int | None = setting(None, "tokens per text, <s> and </s> included (default: the model's limit)",
                                     low=3)
    precision: str = setting("fp32", "fp32 | bf16 (encoder in bf16 autocast; see the README for how close)")
    dtype: str = setting("float32", "float32 | float16: the stored arrays' type", check=_dtype)
    fallback: str | None = setting(None, "module for a language the model lacks: a code, or 'closest'")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")

    def __post_init__(self):
        check_ranges(self)  # Python callers get the checks the command line gets


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def run(s: EmbedSettings) -> dict:
    if not s.model:
        raise ValueError("--model is required: a checkpoint directory")
    files = parse_data(s.data)
    directory = resolve_pretrained(s.model)
    config = XmodConfig.from_pretrained(directory)
    task_file = directory / "task.json"
    trained = json.loads(task_file.read_text(encoding="utf-8")).get("retrieval", {}) if task_file.is_file() else {}
    layer = emb_mod.resolve_layer(s.layer if s.layer is not None else trained.get("layer"), config)
    pooling = emb_mod.check_pooling(s.pooling or trained.get("pooling", "mean"))
    modules = choose_modules([c for c in files if c != "auto"], config, s.fallback)
    model = load_pretrained(directory).to(resolve_device(s.device))  # its class as saved; its encoder is used
    tok = load_model_tokenizers(directory, s.tokenizer)  # per language where some have their own
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for code, path in files.items():
        side = read_side(path)
        ids = side.ids if side.ids is not None else [str(i + 1) for i in range(len(side.texts))]
        langs = (lang_mod.resolve_auto_lang_ids(side.texts, model, s.fallback) if code == "auto"
                 else modules[code])
        vectors = emb_mod.embed_texts(model, tok, side.texts, langs, layers=[layer], pooling=pooling,
                                      normalize=s.normalize, batch_size=s.batch_size, max_length=s.max_length,
                                      precision=s.precision, progress=True)[0]
        array = vectors.numpy().astype(s.dtype)
        atomic_write(out / f"{code}.npy", lambda tmp, a=array: _save(tmp, a))
        atomic_write_text(out / f"{code}.ids.txt", "".join(f"{i}\n" for i in ids))
        written[code] = {"data": str(path), "rows": len(ids), "module": langs if isinstance(langs, str) else "auto",
                         "array": str(out / f"{code}.npy"), "ids": str(out / f"{code}.ids.txt")}
        print(f"{code}: {len(ids)} x {array.shape[1]} -> {out / f'{code}.npy'}")
    info = {"model": str(s.model), "layer": layer, "num_hidden_layers": config.num_hidden_layers, "pooling": pooling,
            "normalize": s.normalize, "precision": s.precision, "dtype": s.dtype, "files": written,
            "settings": asdict(s)}
    atomic_write_text(out / "embeddings.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info
