"""A whole xmod-base-shape bf16 inference forward (12 x 768, modules 768 -> 384 -> 768, vocab 250k, 81 languages;
make_config(12, 768, 250002, 81, 128)) with the language modules through the own vector kernel (on:
native.modules_vector) or through today's path without it (off: modules._vector_applies patched to False, so the
oneDNN paths), alternating forward by forward with a second copy of off as the control; the modules' own time per
forward besides (run_language_modules wrapped in a timer). Batches: the bench's 8 x 128 (batch_for: 8 languages)
and 81 x 32 of 81 languages. Medians over the rounds.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vmods_forward.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import xmodlm
import xmodlm.model as model_mod
from xmodlm.kernels import modules as modules_mod
from xmodlm.kernels import native
from xmodlm.recipes.bench import batch_for, make_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    assert native.vector_available() and not native.available()
    config = make_config(12, 768, 250002, 81, 128)
    torch.manual_seed(0)
    model = model_mod.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
    core = [0.0]
    original = model_mod.run_language_modules

    def timed(*a, **kw):
        start = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            core[0] += time.perf_counter() - start
    model_mod.run_language_modules = timed
    applies = modules_mod._vector_applies
    switch = {"off": lambda *a: False, "on": applies, "off (control)": lambda *a: False}
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds}", flush=True)
    for name, batch, seq in (("8 x 128 (batch_for, 8 languages)", 8, 128), ("81 x 32, 81 languages", 81, 32)):
        ids, lang, _ = batch_for(config, batch, seq, 81)
        times = {k: [] for k in switch}
        cores = {k: [] for k in switch}
        outs = {}
        with torch.no_grad():
            for _ in range(2):
                for key, fn in switch.items():
                    modules_mod._vector_applies = fn
                    outs[key] = model(ids, lang_ids=lang).last_hidden_state.float()
            for _ in range(args.rounds):
                for key, fn in switch.items():
                    modules_mod._vector_applies = fn
                    core[0] = 0.0
                    start = time.perf_counter()
                    model(ids, lang_ids=lang)
                    times[key].append(time.perf_counter() - start)
                    cores[key].append(core[0])
        modules_mod._vector_applies = applies
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        cm = {k: statistics.median(v) * 1e3 for k, v in cores.items()}
        differ = (outs["on"] - outs["off"]).abs().max().item()
        print(f"{name}: forward " + ", ".join(f"{k} {med[k]:.1f} ms (min {min(times[k]) * 1e3:.1f})" for k in switch)
              + f": off / on {med['off'] / med['on']:.3f}x, control / off {med['off (control)'] / med['off']:.3f}x; "
              f"modules " + ", ".join(f"{k} {cm[k]:.1f} ms" for k in switch)
              + f" (off / on {cm['off'] / cm['on']:.2f}x); outputs on vs off differ by at most {differ:.3g}",
              flush=True)


if __name__ == "__main__":
    main()
