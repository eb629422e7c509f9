"""Where the fixed cost of the bf16 MLM training step goes: the bench's model (4 x 256, 8 languages) with the batch
shrunk to 8 x 16 tokens (8 languages), forward + backward + zero_grad(set_to_none) (no optimizer step), one thread.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_profile.py time|loop|cprofile|torch [vocab [hidden]]

time: forward and backward wall clock, medians of 30 steps (all printed); cprofile: per-function self time per
step (20 steps); torch: the profiler's ops by self time per step (10 steps).
"""
import cProfile, pstats, statistics, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

mode = sys.argv[1]
vocab = int(sys.argv[2]) if len(sys.argv) > 2 else 32000
hidden = int(sys.argv[3]) if len(sys.argv) > 3 else 256
config = make_config(4, hidden, vocab, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 8, 16, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)  # for its zero_grad only (the weights stay)


def step():
    s = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    m = time.perf_counter()
    loss.backward()
    e = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    return m - s, e - m


for _ in range(5):
    step()
if mode == "time":
    fw, bw = zip(*(step() for _ in range(30)))
    for name, v in (("forward", fw), ("backward", bw), ("sum", [a + b for a, b in zip(fw, bw)])):
        print(f"{name:9s} median {statistics.median(v) * 1e3:.2f} ms:", " ".join(f"{x * 1e3:.2f}" for x in v))
elif mode == "loop":  # for perf record: steps only, after a marker on stderr
    print("steps start", time.time(), file=sys.stderr, flush=True)
    for _ in range(200):
        step()
elif mode == "cprofile":
    import gc
    gc.disable()  # a full collection (60+ ms, one every ~30 steps) would land on whichever function allocated
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(20):
        step()
    pr.disable()
    stats = pstats.Stats(pr)
    groups = {}
    for (path, line, name), (cc, nc, tt, ct, callers) in stats.stats.items():
        group = ("xmodlm " + path.split("src/xmodlm/")[1] if "src/xmodlm/" in path else
                 "torch (Python)" if "site-packages/torch" in path else
                 "built-in: " + name if path == "~" else "other Python")
        groups[group] = groups.get(group, 0.0) + tt
    print("self time per step by file (ms), 20 steps:")
    for group, tt in sorted(groups.items(), key=lambda g: -g[1])[:40]:
        print(f"  {tt / 20 * 1e3:7.3f}  {group}")
    stats.sort_stats("tottime").print_stats(60)
else:
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    events = prof.key_averages()
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:50]:
        print(f"{e.key[:70]:70s} {e.count / 10:6.1f} {e.self_cpu_time_total / 10 / 1e3:6.3f} ms")
    print("total self time per step %.3f ms" % (sum(e.self_cpu_time_total for e in events) / 10 / 1e3))
