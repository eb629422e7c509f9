"""Where the time of a masked-LM training step goes, at the shape of ``xmodlm bench``'s train suite
(4 x 256, vocab 32k, 8 languages, batch 16 x 128, mixed languages), bf16 autocast or fp32, fused AdamW.

    python3 benchmarks/train_breakdown.py [--steps 7] [--precision bf16|fp32] [--by-shape 30]

Two measurements of the same step, interleaved with nothing else:

* phases, by wall clock (median of ``--steps``): forward with the loss, backward, the optimizer
  (step and zero_grad);
* op families, from one profiled step (torch.profiler, each op's self time, so nested ops are
  not counted twice): matmuls, attention (softmax and SDPA), LayerNorm, GELU, dropout, casts and
  copies, other element-wise ops, the cross-entropy, the optimizer, embeddings; "Python and
  dispatch" is the profiled step's wall time that no op accounts for. The profiler adds a few
  microseconds per op, so the shares of small ops are upper bounds. The fused cross-entropy's ops
  fall in their own families (copies, reductions, element-wise); the loss's wall clock is printed
  apart (``--plain-cross-entropy`` for torch's).

The matmul family gets its model FLOPs (the bench's count) and its rate against the matmul ceiling
measured in the same run at the same thread count. Where the own kernels run the vocabulary projection and
attention (bf16 on AMX), their calls count as matmul: products with the element-wise work fused into them
(the weight's cast, softmax, dropout), so the family's rate is then a lower bound on the products' own.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import xmodlm
import xmodlm.model as model_mod
from xmodlm import kernels
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config, matmul_ceiling, model_flops

# op name (as the profiler reports it) -> family; the first matching fragment wins. The own kernels' autograd
# functions count as products: their self time is the kernel's (attention with its softmax, the language modules with
# their GELU, _BiasInProductBackward's weight and bias gradients, whose input gradient is its aten::mm)
FAMILIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::", "aten::_addmm_activation",
                "aten::linear", "_NativeVocabProjection", "_TrainingAttention", "_NativeTrainingModules",
                "_BiasInProductBackward")),
    ("cross-entropy", ("log_softmax", "nll_loss", "_ScoredCrossEntropy")),
    ("attention (softmax, SDPA)", ("softmax_backward", "aten::_softmax", "scaled_dot_product", "flash_attention")),
    ("LayerNorm (with dropout and residual in the own kernel)", ("layer_norm", "_ResidualNorm")),
    ("GELU", ("gelu", "_TableGelu")),
    ("optimizer", ("adam", "aten::zero_", "Optimizer")),
    ("embeddings", ("embedding",)),
    ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::cat", "aten::index", "aten::stack",
                          "aten::contiguous", "aten::constant_pad_nd", "aten::masked_select", "aten::nonzero")),
    ("reductions (sum)", ("aten::sum",)),
    ("element-wise (mul, add, fill, ...)", ("aten::mul", "aten::add", "aten::div", "aten::fill_", "aten::masked_fill",
                                           "aten::where", "aten::ne", "aten::eq", "aten::ge", "aten::sub")),
)


def family(name: str) -> str:
    for fam, fragments in FAMILIES:
        if any(f in name for f in fragments):
            return fam
    return "other ops"


def build(precision: str):
    layers, hidden, vocab, langs, batch, seq = 4, 256, 32000, 8, 16, 128
    config = make_config(layers, hidden, vocab, langs, seq)
    torch.manual_seed(0)
    model = XmodForMaskedLM(config).train()
    ids, lang, labels = batch_for(config, batch, seq, langs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    amp = precision == "bf16"
    flops = model_flops(config, batch, seq, int(labels.ne(-100).sum()), train=True)

    def phases() -> tuple[float, float, float]:
        return step_phases(model, opt, ids, lang, labels, amp)
    return phases, flops, batch * seq


def step_phases(model, opt, ids, lang, labels, amp: bool) -> tuple[float, float, float]:
    """One masked-LM training step; seconds of (forward, backward, optimizer)."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    mid = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return mid - start, end - mid, time.perf_counter() - end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="timed steps (after 2 untimed)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--plain-cross-entropy", action="store_true", help="F.cross_entropy, not the fused kernel")
    parser.add_argument("--by-shape", type=int, default=0, metavar="N",
                        help="also print the N largest ops by self time with their input shapes (the call sites)")
    args = parser.parse_args()
    xmodlm.tune_allocator()
    kernels.use_fused_cross_entropy(not args.plain_cross_entropy)
    # the loss's own wall clock (its forward; the fused kernel's backward only hands over the gradient)
    loss_time: list[float] = []
    original = model_mod.limited_cross_entropy

    def timed_loss(*a):
        start = time.perf_counter()
        try:
            return original(*a)
        finally:
            loss_time.append(time.perf_counter() - start)
    model_mod.limited_cross_entropy = timed_loss
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    ceiling = max(matmul_ceiling(dtype).values())
    step, flops, tokens = build(args.precision)
    for _ in range(2):
        step()
    loss_time.clear()
    times = [step() for _ in range(args.steps)]
    loss_forward = statistics.median(loss_time)
    fwd, bwd, opt = (statistics.median(t[i] for t in times) for i in range(3))
    total = statistics.median(sum(t) for t in times)

    with profile(activities=[ProfilerActivity.CPU], record_shapes=bool(args.by_shape)) as prof:
        start = time.perf_counter()
        step()
        profiled = time.perf_counter() - start
    spent: dict[str, float] = collections.defaultdict(float)
    top: dict[str, float] = collections.defaultdict(float)
    for event in prof.key_averages():
        spent[family(event.key)] += event.self_cpu_time_total / 1e6
        top[event.key] += event.self_cpu_time_total / 1e6
    spent["Python and dispatch (no op's self time)"] = max(0.0, profiled - sum(spent.values()))

    print(f"MLM train step 4x256 V=32k 8 langs 16x128, {args.precision}{' autocast' if dtype == torch.bfloat16 else ''}, "
          f"{torch.get_num_threads()} thread(s); {args.precision} matmul ceiling {ceiling / 1e9:.0f} GFLOP/s")
    print(f"step {total * 1e3:.1f} ms ({tokens / total:,.0f} tokens/s, MFU {flops / total / ceiling:.1%}): "
          f"forward + loss {fwd * 1e3:.1f}, backward {bwd * 1e3:.1f}, optimizer {opt * 1e3:.1f} ms "
          f"(median of {args.steps}); of the forward, the loss function {loss_forward * 1e3:.1f} ms "
          f"({'plain' if args.plain_cross_entropy else 'fused'} cross-entropy)\n")
    print(f"one profiled step: {profiled * 1e3:.1f} ms")
    print("| part | ms per step | share | GFLOP | GFLOP/s | ms at the ceiling |\n|---|---:|---:|---:|---:|---:|")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        cells = (f"{flops / 1e9:.1f} | {flops / seconds / 1e9:.0f} | {flops / ceiling * 1e3:.1f}"
                 if name == "matmul" else " | | ")
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / profiled:.0%} | {cells} |")
    print("\nlargest ops (self time, ms): " + ", ".join(
        f"{k} {v * 1e3:.1f}" for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:14]))
    if args.by_shape:
        print("\n| op | input shapes | calls | ms per step |\n|---|---|---:|---:|")
        for event in sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:args.by_shape]:
            print(f"| {event.key} | {event.input_shapes} | {event.count} | {event.self_cpu_time_total / 1e3:.1f} |")


if __name__ == "__main__":
    main()
