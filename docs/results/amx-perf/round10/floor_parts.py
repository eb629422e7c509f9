"""What the fixed cost of the bf16 MLM step's forward + backward is made of: the small batch (8 x 16 tokens, 8
languages) on the bench's model (4 layers, hidden 256, vocab 32k) and on shrunk copies of it, whose difference is
the work that scales with the weights: vocab 64 (the 32k x 256 vocabulary matrix gone), then hidden 64 too (every
weight 16x smaller: what is left is the per-call cost: Python, dispatch, autograd, kernel launches), and that with 1
language (the per-language modules' calls still made, 1 segment). Forward + backward + zero_grad(set_to_none), the
models alternating step by step in one process, one thread; then how long a full garbage collection takes in this
process, before and after gc.freeze().

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_parts.py [rounds]
"""
import gc, statistics, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
shapes = {"h256 v32k L8": (256, 32000, 8), "h256 v64 L8": (256, 64, 8), "h64 v64 L8": (64, 64, 8),
          "h64 v64 L1": (64, 64, 1)}
runs = {}
for name, (hidden, vocab, langs) in shapes.items():
    config = make_config(4, hidden, vocab, langs, 128)
    torch.manual_seed(0)
    model = XmodForMaskedLM(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # its zero_grad only
    runs[name] = (model, opt, batch_for(config, 8, 16, langs))


def step(model, opt, batch):
    ids, lang, labels = batch
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    mid = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    return mid - start, end - mid


times = {name: [] for name in runs}
for r in range(rounds + 3):
    for name, run in runs.items():
        t = step(*run)
        if r >= 3:
            times[name].append(t)
print(f"forward + backward at 8 x 16 tokens, {rounds} rounds (after 3), one thread, medians (ms):")
print(f"  {'model':14s} {'forward':>8s} {'backward':>9s} {'sum':>7s}   all sums")
for name, v in times.items():
    fw, bw = statistics.median(a for a, _ in v), statistics.median(b for _, b in v)
    total = statistics.median(a + b for a, b in v)
    print(f"  {name:14s} {fw * 1e3:8.2f} {bw * 1e3:9.2f} {total * 1e3:7.2f}   " + " ".join(f"{(a + b) * 1e3:.1f}" for a, b in v))
for label in ("before gc.freeze()", "after gc.freeze()"):
    spans = []
    for _ in range(5):
        start = time.perf_counter(); gc.collect(); spans.append(time.perf_counter() - start)
    print(f"full collection {label}: {len(gc.get_objects())} tracked objects, median {statistics.median(spans) * 1e3:.1f} ms "
          f"({' '.join(f'{s * 1e3:.1f}' for s in spans)})")
    gc.freeze()
