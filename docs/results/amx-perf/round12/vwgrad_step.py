"""A/B in one process on a processor without AMX: the bench's bf16 MLM training step (4 x 256, FF 1024, vocab 32k,
8 languages, 16 x 128, fused AdamW) with the linears' weight and bias gradients from the own vector kernel
(kernels.amp.use_native_weight_grad(True): xm_weight_grad_vector, float32) or as autocast's addmm backward (False: the
bf16 product, cast to float32 by autograd, the bias's sum apart). "off" and "control" have it off, "on" and "on2"
on; first one step's loss and gradient norm per variant, then whole steps (forward, backward, optimizer step,
zero_grad), the variants in a shuffled order every round; medians.

    taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vwgrad_step.py [rounds] [threads]
"""

from __future__ import annotations

import random
import statistics
import sys
import time

import torch

import xmodlm
from xmodlm.kernels import native, use_native_weight_grad
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config


def step(model, opt, ids, lang, labels) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(threads)
    xmodlm.tune_allocator()
    assert native.vector_available() and not native.available()
    variants = {"off": False, "control": False, "on": True, "on2": True}
    config = make_config(4, 256, 32000, 8, 128)
    torch.manual_seed(0)
    model = XmodForMaskedLM(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids, lang, labels = batch_for(config, 16, 128, 8)
    print(f"threads {threads}, rounds {rounds}")
    for name in ("off", "on"):
        use_native_weight_grad(variants[name])
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = model(input_ids=ids, lang_ids=lang, labels=labels).loss
        value.backward()
        norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
        print(f"  {name:8s} loss {value.item():.6f}  gradient norm {norm.item():.6f}")
        opt.zero_grad(set_to_none=True)
    times = {name: [] for name in variants}
    order = random.Random(0)
    for r in range(rounds + 2):  # the first two rounds warm up, not counted
        for name in order.sample(list(variants), len(variants)):
            use_native_weight_grad(variants[name])
            torch.manual_seed(r)
            start = time.perf_counter()
            step(model, opt, ids, lang, labels)
            if r >= 2:
                times[name].append(time.perf_counter() - start)
    use_native_weight_grad(True)
    med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    for name in variants:
        print(f"  {name:8s} step {med[name]:.1f} ms (min {min(times[name]) * 1e3:.1f})")
    print(f"off / on {med['off'] / med['on']:.3f}x, control / off {med['control'] / med['off']:.3f}x, "
          f"on2 / on {med['on2'] / med['on']:.3f}x")


if __name__ == "__main__":
    main()
