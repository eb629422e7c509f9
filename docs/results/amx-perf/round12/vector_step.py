"""A/B in one process on a processor without AMX: the own vector kernels (native.vector_available) at each call
site on or off, swapped step by step in the bench's bf16 MLM training step (4 x 256, vocab 32k, 8 languages,
16 x 128 with every row a language interleaved, fused AdamW). Each site module's ``native`` is replaced by a proxy
whose ``vector_available`` says the variant's choice:

* norm: kernels/residual_norm.py (LayerNorm(dropout(h) + residual) one call each way, its bf16 twin);
* gelu: kernels/gelu.py (GELU and its backward through tables);
* masks: kernels/dropout.py (keep masks from SFC64 lanes, mask-and-scale on the uint8 mask);
* loss: kernels/loss.py (the cross-entropy over bf16 logits in one call);

"base" and "control" have all off (torch's ops, numpy's masks), "all" all on; with ``minus``, "all" and "all2" all on and each "-site" all but that one. First the loss of one step per
variant (the kernels are float32-grade, not bit-equal, except the masks: the same bits), then whole steps
(forward, backward, optimizer step, zero_grad), the variants alternating.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round12/vector_step.py [rounds] [threads] [minus]
"""
import random, statistics, subprocess, sys, time
import torch, xmodlm
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
torch.set_num_threads(threads); xmodlm.tune_allocator()
from xmodlm.kernels import native, residual_norm, gelu, dropout, loss as loss_mod
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

print(f"# {' '.join(sys.argv)}; threads {threads}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
      + f"; AMX tiles {native.available()}, vector kernels {native.vector_available()}")


class Proxy:
    def __init__(self, on):
        self.on = on

    def vector_available(self):
        return self.on and native.vector_available()

    def __getattr__(self, name):
        return getattr(native, name)


sites = {"norm": residual_norm, "gelu": gelu, "masks": dropout, "loss": loss_mod}
# each site alone, or (``minus`` as the third argument) all but that site; the order shuffled every round
if len(sys.argv) > 3 and sys.argv[3] == "minus":
    variants = {"base": (), "control": (), "all": tuple(sites), "all2": tuple(sites),
                **{f"-{s}": tuple(o for o in sites if o != s) for s in sites}}
else:
    variants = {"base": (), "control": (), **{s: (s,) for s in sites}, "all": tuple(sites)}
proxies = {(s, on): Proxy(on) for s in sites for on in (False, True)}


def use(name):
    for site, module in sites.items():
        module.native = proxies[(site, site in variants[name])]


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
ids, lang, labels = batch_for(config, 16, 128, 8)
for name in variants:
    use(name)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    value.backward()
    norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
    print(f"  {name:8s} loss {value.item():.6f}  gradient norm {norm.item():.6f}")
    opt.zero_grad(set_to_none=True)

phases = ("forward", "backward", "optimizer")
times = {name: [] for name in variants}
order = random.Random(0)
for r in range(rounds + 3):
    for name in order.sample(list(variants), len(variants)):
        use(name)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = model(input_ids=ids, lang_ids=lang, labels=labels).loss
        mid = time.perf_counter()
        value.backward()
        end = time.perf_counter()
        opt.step(); opt.zero_grad(set_to_none=True)
        if r >= 3:
            times[name].append((mid - start, end - mid, time.perf_counter() - end))
print(f"batch 16 x 128, whole steps, {rounds} rounds (after 3), variants in a shuffled order each round; ms, median (min):")
print(f"  {'':8s} {'step':>16s} " + " ".join(f"{p:>16s}" for p in phases))
for name, v in times.items():
    cols = [[sum(t) for t in v]] + [[t[i] for t in v] for i in range(3)]
    print(f"  {name:8s} " + " ".join(f"{statistics.median(c) * 1e3:8.2f} ({min(c) * 1e3:6.2f})" for c in cols))
print("  median of pair differences, base - variant, ms (step, forward, backward, optimizer); step ratio base/variant:")
for other in list(variants)[1:]:
    diffs = [[sum(a) - sum(b) for a, b in zip(times["base"], times[other])]] + [
        [a[i] - b[i] for a, b in zip(times["base"], times[other])] for i in range(3)]
    ratio = statistics.median(sum(t) for t in times["base"]) / statistics.median(sum(t) for t in times[other])
    print(f"  {other:8s} " + " ".join(f"{statistics.median(d) * 1e3:+8.2f}" for d in diffs) + f"   {ratio:.3f}x")
