"""Throughput of the pre-training input pipeline (read + tokenise + pack + mask) on the NTREX files, per vocabulary
size and batch mode, with its parts timed alone and transformers' MLM collator as the masking reference.

    python3 benchmarks/bench_data.py                       # vocab 8000 and 32000, seq_len 512, batch 32
    python3 benchmarks/bench_data.py --vocab-sizes 500 --batches 50

Tokens/s counts every position of the produced input_ids (what a training step consumes). A training step of a
tiny model consumes tens of thousands of tokens/s on 2 CPU cores; the pipeline should be >= 10x that.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # the package need not be installed
from xmodlm.data import MLMBatches, discover_corpora, encode_lines, mask_tokens  # noqa: E402
from xmodlm.tokenizer import mask_id, train_tokenizer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ntrex"


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def bench_batches(corpora, tok, languages, args, mode: str, cache: bool) -> float:
    """Tokens/s of MLMBatches. Streaming (no epoch cache) is the steady state of a large corpus: every token is
    read and encoded once. Cached: NTREX-sized languages replayed from memory after their first epoch."""
    batches = MLMBatches(corpora, tok, languages, args.seq_len, args.batch_size, mode=mode, skip_lines=200,
                         epoch_cache_tokens=(1 << 22) if cache else 0)
    while min(batches.epochs().values()) < (1.05 if cache else 0.02):  # warm-up: open files / fill the caches
        next(batches)
    def buffered() -> int:  # encoded but not yet emitted: counted, so read-ahead neither flatters nor hurts
        return sum(s.buf.size - s.head for s in batches.streams)
    n_tokens, before = 0, buffered()
    start = time.perf_counter()
    for _ in range(args.batches):
        n_tokens += next(batches)["input_ids"].numel()
    elapsed = time.perf_counter() - start
    # Stream tokens are seq_len-2 of every seq_len positions; scale the read-ahead to positions.
    return (n_tokens + (buffered() - before) * args.seq_len / (args.seq_len - 2)) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory of <code>.txt files")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[8000, 32000])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=100, help="timed batches per setting")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.data.is_dir():
        sys.exit(f"no corpus directory {args.data}; pass --data DIR")
    corpora = discover_corpora(args.data)
    languages = list(corpora)
    lines = [ln for p in corpora.values() for ln in p.read_text(encoding="utf-8").splitlines()[:500]]
    print(f"data: {args.data} ({len(languages)} languages); seq_len {args.seq_len}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    for vocab_size in args.vocab_sizes:
        start = time.perf_counter()
        tok = train_tokenizer(corpora, vocab_size, progress=False, skip_lines=200)
        print(f"\nvocab {vocab_size}: tokenizer trained on {len(languages)} languages in "
              f"{time.perf_counter() - start:.1f}s")
        n_tok = encode_lines(tok, lines, 2)[0].size
        t = timed(lambda: encode_lines(tok, lines, 2), repeat=3)
        print(f"  encode_lines alone (Unigram, encode_batch_fast): {n_tok / t / 1e6:6.2f} M tokens/s")
        ids = torch.randint(4, vocab_size - 1, (args.batch_size, args.seq_len))
        special = torch.zeros_like(ids, dtype=torch.bool)
        g = torch.Generator().manual_seed(0)
        t = timed(lambda: mask_tokens(ids, special, mask_id(tok), vocab_size, g), repeat=50)
        print(f"  mask_tokens alone:                               {ids.numel() / t / 1e6:6.2f} M tokens/s")
        try:
            from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast
            hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, mask_token="<mask>", pad_token="<pad>")
            collator = DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15, return_tensors="pt")
            t = timed(lambda: collator.torch_mask_tokens(ids.clone()), repeat=50)
            print(f"  reference: transformers DataCollatorForLanguageModeling.torch_mask_tokens: "
                  f"{ids.numel() / t / 1e6:.2f} M tokens/s")
        except ImportError:
            pass
        for cache in (False, True):
            for mode in ("per_language", "mixed"):
                rate = bench_batches(corpora, tok, languages, args, mode, cache)
                print(f"  MLMBatches {mode:12s} {'epoch cache' if cache else 'streaming  '} "
                      f"(read+tokenise+pack+mask): {rate / 1e6:6.2f} M tokens/s")


if __name__ == "__main__":
    main()
