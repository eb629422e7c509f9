"""bf16 sentence embeddings at xmod-base's shape, side by side in one process: fp32; bf16 autocast on
torch's own ops with autocast's casts at every call (``use_onednn(False)``: the path before issue #19's
change); bf16 autocast on the fused kernels with the weights cast once and cached (the default).

    python3 benchmarks/embed_bf16.py [--texts 200] [--file ../shared/data/bible/zul_Latn.txt]

Random weights (12 x 768, V = 250k); a small tokenizer trained on the file itself; layers 6 and 12,
mean pooling, as ``xmodlm embed``. Prints the best of ``--repeats`` wall times and the largest
1 - cosine against the fp32 embeddings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from xmodlm import kernels
from xmodlm.embeddings import embed_texts
from xmodlm.model import XmodModel
from xmodlm.recipes.bench import make_config
from xmodlm.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=ROOT.parent / "shared" / "data" / "bible" / "zul_Latn.txt")
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not args.file.is_file():
        raise SystemExit(f"--file {args.file}: no such file (one text per line expected)")
    texts = [line for line in args.file.read_text(encoding="utf-8").splitlines() if line.strip()][:args.texts]
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "texts.txt"
        sample.write_text("\n".join(texts) + "\n", encoding="utf-8")
        tok = train_tokenizer({"xx_XX": sample}, vocab_size=2000)
    config = make_config(12, 768, 250002, 2, 512)
    torch.manual_seed(0)
    model = XmodModel(config, add_pooling_layer=False).eval()
    arms = {"fp32": ("fp32", True), "bf16 autocast, torch's ops": ("bf16", False),
            "bf16 autocast, fused kernels (default)": ("bf16", True)}

    def run(precision: str, fused: bool):
        kernels.use_onednn(fused)
        start = time.perf_counter()
        out = embed_texts(model, tok, texts, config.languages[0], layers=(6, -1), precision=precision)
        return time.perf_counter() - start, out
    run("bf16", True)  # warm: packing, tuning
    times: dict[str, list[float]] = {name: [] for name in arms}
    outputs = {}
    for _ in range(args.repeats):
        for name, (precision, fused) in arms.items():
            seconds, outputs[name] = run(precision, fused)
            times[name].append(seconds)
    kernels.use_onednn(True)
    ref = outputs["fp32"]
    print(f"{len(texts)} texts of {args.file.name}, 12x768, layers 6 and 12, {torch.get_num_threads()} thread(s)")
    print("| arm | seconds (best) | max 1 - cos vs fp32, layer 6 / 12 |\n|---|---:|---:|")
    for name, out in outputs.items():
        cos = 1 - (out * ref).sum(-1) / (out.norm(dim=-1) * ref.norm(dim=-1))
        print(f"| {name} | {min(times[name]):.2f} | {cos[0].max():.1e} / {cos[1].max():.1e} |")


if __name__ == "__main__":
    main()
