"""A whole xmod-base-shape bf16 inference forward (12 x 768, 12 heads of 64, vocab 250k, 81 languages, batch 8 x 128
of 7 languages, as infer_breakdown.py builds it) with bf16 attention through the own vector kernel (on) or through
what ran before it (off: native_applies patched to False, so bf16_attention), alternating on and off forward by
forward; the attention core's own time per forward besides (the model's attention function wrapped in a timer).
Unmasked (the bench's batch) and with mixed lengths (padded keys masked). Medians over the rounds.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vattn_forward.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import xmodlm
import xmodlm.model as model_mod
from xmodlm.kernels import attention as kernel_attention
from xmodlm.kernels import native
from xmodlm.recipes.bench import batch_for, make_config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    xmodlm.tune_allocator()
    assert native.vector_available() and not native.available()
    layers, d, batch, seq = 12, 768, 8, 128
    config = make_config(layers, d, 250002, 81, seq)
    torch.manual_seed(0)
    model = model_mod.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
    ids = batch_for(config, batch, seq, 81)[0]
    lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
    lengths = [128, 97, 128, 40, 128, 71, 113, 128]
    padded = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()

    core = [0.0]
    original = model_mod.attention

    def timed(*a, **kw):
        start = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            core[0] += time.perf_counter() - start
    model_mod.attention = timed
    applies = kernel_attention.native_applies
    switch = {"on": applies, "off": lambda *a: False}
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds}; paths: "
          f"{xmodlm.kernels.describe_paths()['bf16 inference attention']}")
    for name, mask in (("unmasked", None), ("masked (mixed lengths)", padded)):
        times = {k: [] for k in switch}
        cores = {k: [] for k in switch}
        outs = {}
        with torch.no_grad():
            for _ in range(2):
                for key, fn in switch.items():
                    kernel_attention.native_applies = fn
                    outs[key] = model(ids, attention_mask=mask, lang_ids=lang).last_hidden_state.float()
            for _ in range(args.rounds):
                for key, fn in switch.items():
                    kernel_attention.native_applies = fn
                    core[0] = 0.0
                    start = time.perf_counter()
                    model(ids, attention_mask=mask, lang_ids=lang)
                    times[key].append(time.perf_counter() - start)
                    cores[key].append(core[0])
        kernel_attention.native_applies = applies
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        core_med = {k: statistics.median(v) * 1e3 for k, v in cores.items()}
        differ = (outs["on"] - outs["off"]).abs().max().item()
        print(f"{name}: forward on {med['on']:.1f} ms (min {min(times['on']) * 1e3:.1f}), off {med['off']:.1f} ms "
              f"(min {min(times['off']) * 1e3:.1f}): off / on {med['off'] / med['on']:.3f}x; attention core on "
              f"{core_med['on']:.1f} ms, off {core_med['off']:.1f} ms ({core_med['off'] / core_med['on']:.2f}x); "
              f"outputs on vs off differ by at most {differ:.3g}", flush=True)


if __name__ == "__main__":
    main()
