"""Where the time of a bf16 encoder forward goes, at the xmod-base shape of ``xmodlm bench``'s infer
suite (12 x 768, vocab 250k, 81 languages, batch 8 x 128, mixed languages), and how fast it could
be at most.

    python3 benchmarks/infer_breakdown.py [--calls 10] [--no-amx-paths]

Wraps the model's parts in a wall-clock timer (CPU ops are synchronous) and prints each part's
milliseconds per forward: the linears (shared matrices and attention output), the attention core,
the language modules, LayerNorm, embeddings and the rest (Python, routing, copies). For the parts
that multiply matrices it also prints their model FLOPs, their rate, and their time at the bf16
matmul ceiling measured in the same run. transformers' XmodModel (bf16, same weights) runs
interleaved with ours, so the last lines compare the two and bound the ratio: what ours would
reach if every matmul-bearing part ran at the ceiling (the rest as measured), and if, besides,
everything else took no time.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch

import xmodlm
import xmodlm.model as model_mod
from xmodlm.recipes.bench import batch_for, make_config, matmul_ceiling, model_flops, reference_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="timed forwards of each model (after 3 untimed)")
    parser.add_argument("--no-amx-paths", action="store_true", help="the kernels chosen for processors without AMX")
    args = parser.parse_args()
    xmodlm.tune_allocator()
    if args.no_amx_paths:
        xmodlm.kernels.prefer_amx_paths(False)
    layers, d, batch, seq = 12, 768, 8, 128
    config = make_config(layers, d, 250002, 81, seq)
    torch.manual_seed(0)
    model = model_mod.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
    reference = reference_from(model, "base").eval()
    ids = batch_for(config, batch, seq, 81)[0]
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

    # module-level functions the layers call (the model's linear and attention, whichever kernel it
    # dispatches to on this processor), and bound methods of the model's modules
    model_mod.linear = timed("linears (shared, attention output)", model_mod.linear)
    model_mod.attention = timed("attention core", model_mod.attention)
    for module in model.modules():
        if isinstance(module, model_mod.XmodOutput):
            module.run_modules = timed("language modules", module.run_modules)
        elif isinstance(module, torch.nn.LayerNorm):
            module.forward = timed("LayerNorm", module.forward)
    model.embeddings.forward = timed("embeddings", model.embeddings.forward)

    tokens, f, r = batch * seq, config.intermediate_size, config.adapter_size
    flops = {"linears (shared, attention output)": 2 * tokens * layers * (4 * d * d + 2 * d * f),
             "attention core": 2 * 2 * tokens * layers * seq * d,
             "language modules": 2 * 2 * tokens * layers * d * r}
    assert sum(flops.values()) == model_flops(config, batch, seq, 0, train=False)  # the bench's count, split by part
    ceiling = max(matmul_ceiling(torch.bfloat16).values())

    ours, theirs = [], []
    with torch.no_grad():
        for _ in range(3):
            model(ids, lang_ids=lang)
            reference(input_ids=ids, lang_ids=lang)
        spent.clear()
        for _ in range(args.calls):  # interleaved, so both see the same machine
            start = time.perf_counter()
            model(ids, lang_ids=lang)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference(input_ids=ids, lang_ids=lang)
            theirs.append(time.perf_counter() - start)
    total, ref_time = statistics.median(ours), statistics.median(theirs)
    parts = {name: seconds / args.calls for name, seconds in spent.items()}
    parts["rest (Python, routing, copies)"] = sum(ours) / args.calls - sum(parts.values())

    print(f"bf16 forward {layers}x{d}, {batch}x{seq} mixed, {torch.get_num_threads()} thread(s); "
          f"bf16 matmul ceiling {ceiling / 1e9:.0f} GFLOP/s; kernel paths: {xmodlm.kernels.describe_paths()}")
    print("| part | ms per forward | share | GFLOP | GFLOP/s | ms at the ceiling |\n|---|---:|---:|---:|---:|---:|")
    mean = sum(parts.values())
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        work = flops.get(name)
        cells = (f"{work / 1e9:.1f} | {work / seconds / 1e9:.0f} | {work / ceiling * 1e3:.1f}" if work else " | | ")
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / mean:.0%} | {cells} |")
    at_ceiling = sum(flops.values()) / ceiling
    rest = sum(seconds for name, seconds in parts.items() if name not in flops)
    print(f"\nmedian of {args.calls} interleaved calls: ours {total * 1e3:.1f} ms, transformers' XmodModel "
          f"{ref_time * 1e3:.1f} ms: {ref_time / total:.2f}x")
    print(f"bound with every matmul-bearing part at the ceiling, the rest as measured: "
          f"{ref_time / (at_ceiling + rest):.2f}x; and the rest free as well: {ref_time / at_ceiling:.2f}x")
    chosen = xmodlm.kernels.tune.choices()
    if chosen:  # (kind, rows bucket, in, out, activation, residual, threads) -> formulation
        print("formulations timed per shape (kernels.tune): "
              + "; ".join(f"{k[2]}->{k[3]}{' ' + k[4] if k[4] else ''}{' +residual' if k[5] else ''} at {k[1]} rows: {v}"
                          for k, v in chosen.items()))


if __name__ == "__main__":
    main()
