"""A/B in one process: this branch's changes against main's code ("base", and the same again, "control"), each
change alone and all together, swapped step by step in the bench's bf16 MLM training step (4 x 256, vocab 32k, 8
languages, 16 x 128 with every row a language interleaved, fused AdamW), one thread:

* dropout: kernels/dropout.py's _MaskAndScale (forward, backward), main's module loaded beside this one;
* tied: kernels/tied.py's add_rows, main's module loaded beside;
* rows: model.py's permute_rows (this branch) against main's x.index_select(0, order);

the own kernels' library is this branch's for all (main's code calls none of what this branch adds to it). First
the bits: from one state and seed the loss and every gradient of each variant compared with base by torch.equal
and word for word (the float32 words as int32); then whole steps (forward, backward, optimizer step, zero_grad),
the variants alternating.

    git show main:src/xmodlm/kernels/dropout.py > /tmp/dropout_main.py
    git show main:src/xmodlm/kernels/tied.py > /tmp/tied_main.py
    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/diet_step.py /tmp/dropout_main.py /tmp/tied_main.py [rounds]
"""
import importlib.util, statistics, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
import xmodlm.kernels.dropout as here_dropout
import xmodlm.kernels.tied as here_tied
import xmodlm.model as model_mod
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config


def load(path, name):
    spec = importlib.util.spec_from_file_location(f"xmodlm.kernels.{name}_main", path)
    module = importlib.util.module_from_spec(spec); module.__package__ = "xmodlm.kernels"
    sys.modules[spec.name] = module; spec.loader.exec_module(module)
    return module


main_dropout, main_tied = load(sys.argv[1], "dropout"), load(sys.argv[2], "tied")
parts = ("forward", "backward")
changes = {
    "dropout": ([main_dropout._MaskAndScale.__dict__[p] for p in parts],
                [here_dropout._MaskAndScale.__dict__[p] for p in parts]),
    "tied": (main_tied.add_rows, here_tied.add_rows),
    "rows": (lambda x, order, inverse: x.index_select(0, order), model_mod.permute_rows),
}


def set_change(change, new):
    value = changes[change][1 if new else 0]
    if change == "dropout":
        for p, f in zip(parts, value):
            setattr(here_dropout._MaskAndScale, p, f)
    elif change == "tied":
        here_tied.add_rows = value
    else:
        model_mod.permute_rows = value


variants = {"base": (), "control": (), "dropout": ("dropout",), "tied": ("tied",), "rows": ("rows",),
            "all": ("dropout", "tied", "rows")}


def use(name):
    for change in changes:
        set_change(change, change in variants[name])


rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 40
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)


def forward_backward(ids, lang, labels):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward()
    return loss


def words(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


for batch, seq in ((8, 16), (16, 128)):
    ids, lang, labels = batch_for(config, batch, seq, 8)
    results = {}
    for name in variants:
        use(name)
        torch.manual_seed(1)
        loss = forward_backward(ids, lang, labels)
        results[name] = [loss.detach().clone()] + [p.grad.clone() for p in model.parameters()]
        opt.zero_grad(set_to_none=True)
    same = {name: all(torch.equal(a, b) for a, b in zip(results["base"], r)) for name, r in results.items()}
    bits = {name: sum(not torch.equal(words(a), words(b)) for a, b in zip(results["base"], r))
            for name, r in results.items()}
    print(f"bits at {batch} x {seq}: loss and {len(results['base']) - 1} gradients torch.equal to base: {same}; "
          f"tensors whose words differ from base's: {bits}")

ids, lang, labels = batch_for(config, 16, 128, 8)
phases = ("forward", "backward", "optimizer")
times = {name: [] for name in variants}  # per step: (forward, backward, optimizer) seconds
for r in range(rounds + 3):
    for name in variants:
        use(name)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
        mid = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        opt.step(); opt.zero_grad(set_to_none=True)
        if r >= 3:
            times[name].append((mid - start, end - mid, time.perf_counter() - end))
print(f"batch 16 x 128, whole steps, {rounds} rounds (after 3), variants alternating; ms, median (min):")
print(f"  {'':8s} {'step':>16s} " + " ".join(f"{p:>16s}" for p in phases))
for name, v in times.items():
    cols = [[sum(t) for t in v]] + [[t[i] for t in v] for i in range(3)]
    print(f"  {name:8s} " + " ".join(f"{statistics.median(c) * 1e3:8.2f} ({min(c) * 1e3:6.2f})" for c in cols))
print("  median of pair differences, base - variant, ms (step, forward, backward, optimizer):")
for other in list(variants)[1:]:
    diffs = [[sum(a) - sum(b) for a, b in zip(times["base"], times[other])]] + [
        [a[i] - b[i] for a, b in zip(times["base"], times[other])] for i in range(3)]
    print(f"  base - {other:8s} " + " ".join(f"{statistics.median(d) * 1e3:+8.3f}" for d in diffs))
