"""Where the time of a bf16 encoder forward goes, at the xmod-base shape of ``xmodlm bench``'s infer
suite (12 x 768, vocab 250k, 81 languages, batch 8 x 128, mixed languages).

    python3 benchmarks/infer_breakdown.py [--calls 10]

Wraps the model's parts in a wall-clock timer (CPU ops are synchronous) and prints each part's
milliseconds per forward: the linears (shared matrices and attention output), the attention core,
the language modules, LayerNorm, embeddings and the rest (Python, routing, copies).
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

import xmodlm
import xmodlm.model as model_mod
from xmodlm.recipes.bench import batch_for, make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="timed forwards (after 3 untimed)")
    args = parser.parse_args()
    xmodlm.tune_allocator()
    config = make_config(12, 768, 250002, 81, 128)
    torch.manual_seed(0)
    model = model_mod.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
    ids = batch_for(config, 8, 128, 81)[0]
    lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])  # as the bench: 7 languages, one of them twice

    spent: dict[str, float] = collections.defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapper

    # module-level functions the layers call, and bound methods of the model's modules
    model_mod.linear = timed("linears (shared, attention output)", model_mod.linear)
    model_mod.bf16_attention = timed("attention core", model_mod.bf16_attention)
    for module in model.modules():
        if isinstance(module, model_mod.XmodOutput):
            module.run_modules = timed("language modules", module.run_modules)
        elif isinstance(module, torch.nn.LayerNorm):
            module.forward = timed("LayerNorm", module.forward)
    model.embeddings.forward = timed("embeddings", model.embeddings.forward)

    with torch.no_grad():
        for _ in range(3):
            model(ids, lang_ids=lang)
        spent.clear()
        start = time.perf_counter()
        for _ in range(args.calls):
            model(ids, lang_ids=lang)
        total = (time.perf_counter() - start) / args.calls
    print(f"bf16 forward 12x768, 8x128 mixed: {total * 1e3:.1f} ms per call")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:36s} {seconds / args.calls * 1e3:7.1f} ms")
    print(f"  {'rest (Python, routing, copies)':36s} {(total - sum(spent.values()) / args.calls) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
