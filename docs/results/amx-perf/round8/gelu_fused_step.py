"""The bench's bf16 MLM step with the fused feed-forward GELU (training-gelu-fused-attempt.diff applied) off and on,
alternating step by step in one process, 15 steps each after 4 untimed.
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round8/gelu_fused_step.py"""
import sys, time, statistics
from pathlib import Path
import torch
from xmodlm import kernels
from xmodlm.kernels import native
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
t = {"off": [], "on": []}
for i in range(4 + 2 * 15):
    name = ["off", "on"][i % 2]
    kernels.use_fused_training_gelu(name == "on")
    s = time.perf_counter(); step(); e = time.perf_counter() - s
    if i >= 4: t[name].append(e)
a, b = statistics.median(t["on"]), statistics.median(t["off"])
print(f"{torch.get_num_threads()} threads: gelu fused on {a*1e3:.1f} off {b*1e3:.1f} ms: {b/a:.3f}x")
