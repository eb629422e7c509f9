"""The language modules of one xmod-base layer in bf16 inference (d 768, modules 768 -> 384 -> 768, GELU, residual
and the post-norm in the call where it applies) alone: through the own vector kernel (on: native.modules_vector)
against today's path without it (off: modules._vector_applies patched to False, so the oneDNN paths), with a second
copy of off as the control; the variants alternate call by call in one process. Layouts: batch 8 x 128 of 8
languages (8 segments of 128 rows) and 81 x 32 of 81 languages (81 segments of 32 rows). Medians over the rounds;
the largest difference between on's and off's outputs besides.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vmods_alone.py [--rounds 30]
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
from xmodlm.kernels.modules import run_language_modules
from xmodlm.recipes.bench import make_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10, help="calls per timed sample")
    args = parser.parse_args()
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    assert native.vector_available() and not native.available()
    config = make_config(1, 768, 1000, 81, 128)
    torch.manual_seed(0)
    output = model_mod.XmodOutput(config).to(torch.bfloat16).eval()
    for p in output.parameters():  # trained-looking biases, not zeros
        p.data.normal_(0, 0.03)
    output.LayerNorm.weight.data.fill_(1)
    codes = list(config.languages)
    applies = modules_mod._vector_applies
    switch = {"off": lambda *a: False, "on": applies, "off (control)": lambda *a: False}
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds} x {args.calls} calls", flush=True)
    for name, batch, seq, langs in (("8 x 128, 8 languages", 8, 128, 8), ("81 x 32, 81 languages", 81, 32, 81)):
        h = torch.randn(batch, seq, 768).bfloat16()
        skip = torch.randn(batch, seq, 768).bfloat16()
        table = output.adapter_modules._modules
        modules = [table[codes[i]] for i in range(langs)]
        rows = (batch // langs,) * langs
        times = {k: [] for k in switch}
        outs = {}
        with torch.no_grad():
            for _ in range(3):
                for key, fn in switch.items():
                    modules_mod._vector_applies = fn
                    outs[key] = run_language_modules(rows, modules, h, skip, output.dropout, False, output,
                                                     output.LayerNorm).float()
            for _ in range(args.rounds):
                for key, fn in switch.items():
                    modules_mod._vector_applies = fn
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        run_language_modules(rows, modules, h, skip, output.dropout, False, output, output.LayerNorm)
                    times[key].append((time.perf_counter() - start) / args.calls)
        modules_mod._vector_applies = applies
        flops = 2 * 2 * batch * seq * 768 * 384
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        differ = (outs["on"] - outs["off"]).abs().max().item()
        print(f"{name}: " + ", ".join(f"{k} {med[k]:.2f} ms ({flops / med[k] / 1e6:.0f} GFLOP/s, min "
                                      f"{min(times[k]) * 1e3:.2f})" for k in switch)
              + f"; off / on {med['off'] / med['on']:.3f}x, control / off {med['off (control)'] / med['off']:.3f}x; "
              f"outputs on vs off differ by at most {differ:.3g}", flush=True)


if __name__ == "__main__":
    main()
