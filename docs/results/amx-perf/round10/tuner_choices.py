"""The bf16 inference forward (xmod-base shape, as benchmarks/infer_breakdown.py builds it: 12 x 768, 81 languages,
8 x 128 mixed, eval, bf16 weights) with the tuner's choices as it made them and with one shape's choice replaced,
alternating forward by forward in one process (kernels.tune's cache swapped between forwards; outputs compared).

    PYTHONPATH=src python3 docs/results/amx-perf/round10/tuner_choices.py [--forwards 20] [--vocab 250002]

Why: kernels.tune keeps oneDNN's fused call (its default) unless another formulation is more than 10% faster in
its few timing rounds on the shape's first call; at one thread the own kernel ran 1024 x 768 -> 2304 (the
attention projections) faster than oneDNN (round10/kblock-alone-1thread*.txt), yet the forward kept oneDNN there."""

import argparse
import statistics
import time

import torch

import xmodlm
import xmodlm.model as model_mod
from xmodlm.kernels import tune
from xmodlm.recipes.bench import batch_for, make_config

parser = argparse.ArgumentParser()
parser.add_argument("--forwards", type=int, default=20)
parser.add_argument("--vocab", type=int, default=250002)
args = parser.parse_args()
xmodlm.tune_allocator()
config = make_config(12, 768, args.vocab, 81, 128)
torch.manual_seed(0)
model = model_mod.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
with torch.no_grad():
    for _ in range(3):
        model(ids, lang_ids=lang)
made = tune.choices()
print(f"{torch.get_num_threads()} thread(s); the tuner's choices: " + "; ".join(f"{k[:-2]}: {v}" for k, v in made.items()))
variants = {"as tuned": dict(made)}
for key, name in made.items():
    offered = key[-1]
    for other in ("AMX kernel, rows split", "fused"):
        if other in offered and other != name:
            variants[f"{key[:-2]} -> {other}"] = {**made, key: other}
times = {v: [] for v in variants}
outputs = {}
with torch.no_grad():
    for v, table in variants.items():  # one untimed forward each
        tune._CHOICES.clear(); tune._CHOICES.update(table)
        outputs[v] = model(ids, lang_ids=lang).last_hidden_state
    for _ in range(args.forwards):
        for v, table in variants.items():
            tune._CHOICES.clear(); tune._CHOICES.update(table)
            start = time.perf_counter()
            model(ids, lang_ids=lang)
            times[v].append(time.perf_counter() - start)
base = statistics.median(times["as tuned"])
for v, t in times.items():
    diff = (outputs[v].float() - outputs["as tuned"].float()).abs().max().item()
    print(f"{v:70s} median {statistics.median(t) * 1e3:7.1f} ms  as tuned / this {base / statistics.median(t):.3f}"
          f"  max |diff| vs as tuned {diff:.3g}")
print("all runs, ms: " + "; ".join(f"{v}: " + " ".join(f"{x * 1e3:.1f}" for x in t) for v, t in times.items()))
