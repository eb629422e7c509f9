"""The bench's fp32 masked-LM step (4 x 256, V = 32k, 8 languages, 16 x 128; fused AdamW) in one process with the
weight gradients forced to oneDNN and to BLAS, step by step alternately (the same model and batch), then as the
timing chooses: paired times, their ratio per pair, and the choices the timing made.
Usage: PYTHONPATH=src python docs/results/amx-perf/round14/ab_step.py [pairs] [warmup]"""
import statistics
import sys
import time

import torch

from xmodlm import kernels
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

pairs, warmup = (int(a) for a in (sys.argv[1:3] + ["9", "2"][len(sys.argv[1:3]):]))
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
opt = torch.optim.AdamW(list(model.parameters()), lr=1e-5, fused=True)


def step(form):
    kernels.use_autotune(True, force=form)
    start = time.perf_counter()
    model(input_ids=ids, lang_ids=lang, labels=labels).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


for form in ("oneDNN", "BLAS") * warmup:
    step(form)
times = {"oneDNN": [], "BLAS": []}
for i in range(pairs):
    for form in (("oneDNN", "BLAS") if i % 2 == 0 else ("BLAS", "oneDNN")):
        times[form].append(step(form))
ratios = [a / b for a, b in zip(times["oneDNN"], times["BLAS"])]
print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
for form, t in times.items():
    print(f"{form:7s} step ms: median {1e3 * statistics.median(t):.1f}  (" + ", ".join(f"{1e3 * x:.0f}" for x in t) + ")")
print(f"oneDNN / BLAS per pair: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}")
kernels.use_autotune(True)  # as a run takes it: timed
tuned = [step(None) for _ in range(3)]
print(f"timed choice: step ms {', '.join(f'{1e3 * x:.0f}' for x in tuned)}; "
      f"{kernels.describe_paths()['weight gradients in fp32 training (CPU)']}")
