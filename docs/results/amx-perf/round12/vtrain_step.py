"""A/B in one process on a processor without AMX: the bench's bf16 MLM training step (4 x 256, 4 heads of 64,
vocab 32k, 8 languages, batch 16 x 128, attention dropout 0.1, fused AdamW) with attention through the own vector
kernel (use_native_training_attention(True): xm_attention_train_vector and its backward) or through
dropout_attention ("off", and "off2" its control copy), whole steps (forward, backward, optimizer step, zero_grad),
the variants in a shuffled order each round. First each variant's loss and gradient norm of one seeded step and
how many attention calls took the kernel. With a second argument, a shared library built from another native.c
(the package's FLAGS): variant "alt", the kernel on with that library's vector kernels.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vtrain_step.py [rounds] [alt.so]
"""
import ctypes, os, random, statistics, subprocess, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.kernels import attention, native
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config

print(f"# taskset -c {','.join(map(str, sorted(os.sched_getaffinity(0))))} env OMP_NUM_THREADS="
      f"{os.environ.get('OMP_NUM_THREADS')} PYTHONPATH=src {sys.executable} {' '.join(sys.argv)}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
      + f" (family {next(l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('cpu family'))})"
      + f"; AMX tiles {native.available()}, vector kernels {native.vector_available()}")
variants = {"off": False, "on": True, "off2": False}
own_kernel = native._training_kernel
if len(sys.argv) > 2:
    alt = ctypes.CDLL(sys.argv[2])
    native._attention_train_vector_argtypes(alt, ctypes.c_void_p, ctypes.c_int64)
    for name in ("xm_attention_train", "xm_attention_train_backward"):
        getattr(alt, name + "_vector").argtypes = getattr(native._library(), name).argtypes
    variants["alt"] = True


def use(name):
    attention.use_native_training_attention(variants[name])
    native._training_kernel = ((lambda kernel: getattr(alt, kernel + "_vector")) if name == "alt" else own_kernel)


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 25
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
ids, lang, labels = batch_for(config, 16, 128, 8)
original = attention._TrainingAttention.apply
for name in variants:
    use(name)
    calls = []
    attention._TrainingAttention.apply = lambda *a: calls.append(1) or original(*a)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    value.backward()
    attention._TrainingAttention.apply = original
    norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
    print(f"  {name:5s} loss {value.item():.6f}  gradient norm {norm.item():.6f}  kernel calls {len(calls)}")
    opt.zero_grad(set_to_none=True)

phases = ("forward", "backward", "optimizer")
times = {name: [] for name in variants}
order = random.Random(0)
for r in range(rounds + 3):
    for name in order.sample(list(variants), len(variants)):
        use(name)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = model(input_ids=ids, lang_ids=lang, labels=labels).loss
        mid = time.perf_counter()
        value.backward()
        end = time.perf_counter()
        opt.step(); opt.zero_grad(set_to_none=True)
        if r >= 3:
            times[name].append((mid - start, end - mid, time.perf_counter() - end))
print(f"batch 16 x 128, whole steps, {rounds} rounds (after 3), one thread; ms, median (min):")
print(f"  {'':5s} {'step':>16s} " + " ".join(f"{p:>16s}" for p in phases))
for name, v in times.items():
    cols = [[sum(t) for t in v]] + [[t[i] for t in v] for i in range(3)]
    print(f"  {name:5s} " + " ".join(f"{statistics.median(c) * 1e3:8.2f} ({min(c) * 1e3:6.2f})" for c in cols))
print("  median of pair differences, off - variant, ms (step, forward, backward, optimizer); step ratio off/variant:")
for other in list(variants)[1:]:
    diffs = [[sum(a) - sum(b) for a, b in zip(times["off"], times[other])]] + [
        [a[i] - b[i] for a, b in zip(times["off"], times[other])] for i in range(3)]
    ratio = statistics.median(sum(t) for t in times["off"]) / statistics.median(sum(t) for t in times[other])
    print(f"  {other:5s} " + " ".join(f"{statistics.median(d) * 1e3:+8.2f}" for d in diffs) + f"   {ratio:.3f}x")
