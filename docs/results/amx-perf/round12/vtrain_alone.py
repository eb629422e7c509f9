"""Training attention alone, forward + backward, one thread, on a processor without AMX: the own vector kernel
(native_training_attention through xm_attention_train_vector and its backward, the fused projection's gradient
written directly) against dropout_attention (torch's ops under bf16 autocast and autograd's backward), the
package's Dropout(0.1) and a key mask, alternating call by call in one process ("torch2": a control copy of
dropout_attention). Heads of one fused projection (B, T, 3 H D), as the model makes them; medians in ms.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python docs/results/amx-perf/round12/vtrain_alone.py [rounds]
"""
import os, random, statistics, subprocess, sys, time
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
import xmodlm.kernels as kernels
from xmodlm.kernels import native
from xmodlm.kernels.attention import dropout_attention, native_training_attention

print(f"# taskset -c {','.join(map(str, sorted(os.sched_getaffinity(0))))} env OMP_NUM_THREADS="
      f"{os.environ.get('OMP_NUM_THREADS')} PYTHONPATH=src {sys.executable} {' '.join(sys.argv)}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
      + f" (family {next(l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('cpu family'))})"
      + f"; AMX tiles {native.available()}, vector kernels {native.vector_available()}")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
dropout = kernels.Dropout(0.1).train()


def case(b, h, t, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, t, 3 * h * d, generator=g).bfloat16().requires_grad_()
    keys = torch.ones(b, t, dtype=torch.bool)
    keys[:, t - t // 8:] = False  # some padding, as in a batch
    dout = torch.randn(b, h, t, d, generator=g).bfloat16()
    return x, keys[:, None, None, :], dout


def run(fn, x, mask, dout, h, d):
    b, t, _ = x.shape
    q, k, v = x.view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(q, k, v, mask, dropout, x) if fn is native_training_attention else fn(q, k, v, mask, dropout)
    out.backward(dout)
    x.grad = None


variants = {"vector": native_training_attention, "torch": dropout_attention, "torch2": dropout_attention}
shapes = [(16, 4, 128, 64), (16, 4, 128, 32), (16, 4, 128, 128), (16, 4, 32, 64), (16, 4, 200, 64),
          (16, 4, 32, 32), (16, 4, 16, 64), (2, 1, 12, 32), (4, 4, 512, 64), (16, 4, 128, 256)]
order = random.Random(0)
print(f"{'B, H, T, D':18s} {'vector':>8s} {'torch':>8s} {'torch2':>8s}  torch/vector  torch2/torch")
for b, h, t, d in shapes:
    x, mask, dout = case(b, h, t, d)
    times = {name: [] for name in variants}
    for r in range(rounds + 3):
        for name in order.sample(list(variants), len(variants)):
            start = time.perf_counter()
            run(variants[name], x, mask, dout, h, d)
            if r >= 3:
                times[name].append(time.perf_counter() - start)
    m = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    print(f"{str((b, h, t, d)):18s} {m['vector']:8.3f} {m['torch']:8.3f} {m['torch2']:8.3f}  "
          f"{m['torch'] / m['vector']:12.2f}  {m['torch2'] / m['torch']:12.3f}", flush=True)
