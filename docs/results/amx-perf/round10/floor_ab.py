"""A/B in one process: what this branch changes, as on main ("base", and an identical copy "control") and as here
("new"): _NativeTrainingModules.backward and the own kernels' library (native.c built from main's source and from
this one, both loaded, native's handle swapped), swapped step by step in the bf16 MLM training step (the bench's model: 4 x 256, vocab 32k, 8
languages, fused AdamW), one thread. First the bits: from one state and seed, the loss and every gradient of the
three variants compared with torch.equal; then whole steps (forward, backward, optimizer step, zero_grad), the
variants alternating, at the small batch (8 x 16, 8 languages) and the bench's (16 x 128).

    git show main:src/xmodlm/kernels/module_training.py > /tmp/module_training_main.py
    git show main:src/xmodlm/kernels/native.c > /tmp/native_main.c
    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_ab.py /tmp/module_training_main.py /tmp/native_main.c [small_rounds full_rounds]
"""
import importlib.util, statistics, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
import xmodlm.kernels.module_training as here
from pathlib import Path
from xmodlm.kernels import native
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

spec = importlib.util.spec_from_file_location("xmodlm.kernels.module_training_main", sys.argv[1])
main = importlib.util.module_from_spec(spec); main.__package__ = "xmodlm.kernels"
sys.modules[spec.name] = main; spec.loader.exec_module(main)
new_lib = native._library()
source = native.SOURCE
native.SOURCE = Path(sys.argv[2])  # main's native.c, built (into the kernel cache, by its hash) and loaded beside
main_lib, why = native._load()
native.SOURCE = source
assert main_lib is not None and main_lib._name != new_lib._name, why
print("libraries: base", main_lib._name, "new", new_lib._name)
# per variant: _NativeTrainingModules.backward, the library
variants = {"base": (main._NativeTrainingModules.__dict__["backward"], main_lib),
            "control": (main._NativeTrainingModules.__dict__["backward"], main_lib),
            "new": (here._NativeTrainingModules.__dict__["backward"], new_lib)}


def use(name):
    here._NativeTrainingModules.backward, native._STATE["lib"] = variants[name]


small_rounds, full_rounds = (int(a) for a in sys.argv[3:5]) if len(sys.argv) > 4 else (80, 24)
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)


def forward_backward(ids, lang, labels):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward()
    return loss


# bits: the same state and seed for each variant
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
    print(f"bits at {batch} x {seq}: loss and {len(results['base']) - 1} gradients torch.equal to base: {same}")

for (batch, seq), rounds in (((8, 16), small_rounds), ((16, 128), full_rounds)):
    ids, lang, labels = batch_for(config, batch, seq, 8)
    times = {name: [] for name in variants}
    for r in range(rounds + 3):
        for name in variants:
            use(name)
            start = time.perf_counter()
            forward_backward(ids, lang, labels)
            opt.step(); opt.zero_grad(set_to_none=True)
            if r >= 3:
                times[name].append(time.perf_counter() - start)
    print(f"batch {batch} x {seq}, whole steps, {rounds} rounds (after 3), variants alternating:")
    for name, v in times.items():
        print(f"  {name:8s} median {statistics.median(v) * 1e3:8.2f} ms:", " ".join(f"{x * 1e3:.1f}" for x in v))
    for other in ("control", "new"):
        d = [a - b for a, b in zip(times["base"], times[other])]
        print(f"  base - {other}: median of pair differences {statistics.median(d) * 1e3:+.3f} ms")
