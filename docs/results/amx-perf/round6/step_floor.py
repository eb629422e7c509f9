"""The training step's fixed cost at the bench's structure (4 layers, 8 languages, bf16 autocast, fused AdamW) with
tiny widths (hidden 32, feed-forward 64, vocabulary 512) and 8 x 16 tokens: what Python, dispatch and autograd
take whatever the work. Usage: PYTHONPATH=src python3 docs/results/amx-perf/round6/step_floor.py"""

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from train_breakdown import step_phases  # noqa: E402
from xmodlm.model import XmodForMaskedLM  # noqa: E402
from xmodlm.recipes.bench import batch_for, make_config  # noqa: E402

xmodlm.tune_allocator()
config = make_config(4, 32, 512, 8, 128)
config.intermediate_size = 64
ids, lang, labels = batch_for(config, 8, 16, 8)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
phases = []
for i in range(35):
    parts = step_phases(model, opt, ids, lang, labels, True)
    if i >= 5:
        phases.append(parts)
fwd, bwd, step = (1e3 * statistics.median(p[i] for p in phases) for i in range(3))
print(f"tiny step ({torch.get_num_threads()} threads): forward {fwd:.1f}, backward {bwd:.1f}, optimizer {step:.1f} ms, "
      f"total {fwd + bwd + step:.1f} ms (medians of 30)")
