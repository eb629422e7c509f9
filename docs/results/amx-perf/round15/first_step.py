"""The first training steps of a process, with the kernels' choices timed in it (an empty choice file) or taken from
the file an earlier process wrote: `xmodlm bench`'s train model and batch (4 x 256, 32k vocabulary, 8 languages,
16 x 128 mixed), fp32, AdamW.

    PYTHONPATH=src python docs/results/amx-perf/round15/first_step.py FILE   (prints one line)

Run it twice with the same FILE (the first run times, the second takes its choices); round15/first_step.sh
alternates such pairs.
"""
import sys
import time

import torch

from xmodlm import runtime
from xmodlm.kernels import tune
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

taken = runtime.use_choice_cache(sys.argv[1])
torch.manual_seed(0)
config = make_config(4, 256, 32000, 8, 128)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
times = []
for _ in range(4):
    start = time.perf_counter()
    model(input_ids=ids, lang_ids=lang, labels=labels).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - start)
later = sorted(times[1:])[1]
print(f"choices taken from the file {taken:2d}, made {len(tune.choices()) - taken:2d}: first step {times[0]:.2f} s, "
      f"median of the next three {later:.2f} s, the first's extra {times[0] - later:.2f} s", flush=True)
