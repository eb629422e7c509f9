"""One MLM training step's 17 weight-gradient calls (the bench's train shape), collected from a real step, replayed
from cold caches (600 MB written between replays) through the kernel as built and through copies of native.c with
one part removed (wrong results; only their times count): dY's columns laid out only for the first two blocks
(the products then read stale layouts), and no products at all. Medians of 5, one thread or the process's.
Usage: PYTHONPATH=src python3 docs/results/amx-perf/round8/weight_grad_replay.py"""

import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from xmodlm.kernels import native
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

SOURCE = native.SOURCE
text = SOURCE.read_text()
variants = {"as built": text}
call = "weight_grad_columns(dy, ldy, t, t_tiles, nb, ab, pairs, db && k0 == 0 ? db + nb * 32 : NULL);"
variants["dY laid out for two blocks only"] = text.replace("if (blocks == 1 || k0 == 0)\n                    " + call,
                                                            "if (nb < 2 && k0 == 0)\n                    " + call)
variants["no products"] = text.replace("for (int64_t c = 0; c < w / 32; c++) {\n                    const uint16_t *b0",
                                       "for (int64_t c = 0; c < 0; c++) {\n                    const uint16_t *b0")
for name, v in variants.items():
    if name != "as built" and v == text:
        raise SystemExit(f"the variant {name!r} no longer applies to native.c: update this script")

config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
original, saved = native.weight_grad, []


def keep(g, x, bias_grad=True):
    saved.append((g.clone(), x.clone()))
    return original(g, x, bias_grad)


native.weight_grad = keep
for _ in range(2):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
calls = saved[len(saved) // 2:]
junk = torch.zeros(600 * 1024 * 1024 // 4)  # more than the last-level cache: each replay starts cold
libraries = {}
with tempfile.TemporaryDirectory() as folder:
    os.environ["XMODLM_KERNEL_CACHE"] = folder
    for i, (name, source) in enumerate(variants.items()):
        path = Path(folder) / f"variant{i}.c"
        path.write_text(source)
        native._STATE.update(lib=None, tried=False)
        native.SOURCE = path
        libraries[name] = native._library()
    times = {name: [] for name in libraries}
    for _ in range(5):
        for name, lib in libraries.items():
            native._STATE["lib"] = lib
            junk.add_(1.0)
            start = time.perf_counter()
            for g, x in calls:
                original(g, x)
            times[name].append(time.perf_counter() - start)
print(f"{torch.get_num_threads()} thread(s); a step's {len(calls)} weight-gradient calls from cold caches:")
for name, t in times.items():
    print(f"{name:32s} {statistics.median(t) * 1e3:.1f} ms")
