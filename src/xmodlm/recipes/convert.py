"""Convert recipe: a fairseq X-Mod checkpoint becomes a Hugging Face directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import convert_fairseq
from ..settings import setting


@dataclass
class ConvertSettings:
    checkpoint: str = setting("", "fairseq checkpoint (model.pt)")
    out: str = setting("", "output directory (config.json + model.safetensors)")
    languages: list[str] = setting([], "language codes in id order (default: from the checkpoint)")
    num_attention_heads: int | None = setting(None, "heads, when the checkpoint stores no model config", low=1)


def run(s: ConvertSettings) -> Path:
    if not s.checkpoint or not s.out:
        raise ValueError("usage: xmodlm convert-fairseq CHECKPOINT --out DIR")
    out = convert_fairseq(s.checkpoint, s.out, s.languages or None, num_attention_heads=s.num_attention_heads)
    print(f"converted {s.checkpoint} -> {out}")
    return out
