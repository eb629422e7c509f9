"""The fused loss's numbers against main's separate loss and float64, on the bench step's own inputs of the
vocabulary projection (captured from a bf16 training step: 303 scored rows x 256, the float32 tied weight and its
bias, the targets) and on drawn inputs (logits spread 1x and 30x): the logits, each row's max and sum, the losses,
dlogits (the fused backward's, read out row by row as db of one-row backwards), dX, dW and db. One thread. Usage:

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/vocab_bits.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "round9"))
sys.path.insert(0, str(Path(__file__).parents[4] / "benchmarks"))
import xmodlm  # noqa: E402
from harness import calls_of  # noqa: E402
from train_breakdown import build  # noqa: E402
from xmodlm.kernels import amp, native  # noqa: E402

torch.set_num_threads(1)
xmodlm.tune_allocator()


def step_inputs():
    phases, _, _ = build("bf16")
    step = lambda: sum(phases())  # noqa: E731
    amp.use_fused_vocab_loss(False)
    (x, w, b), = calls_of(native, "vocab_forward", step)
    (_, targets, _), = calls_of(native, "cross_entropy", step)
    amp.use_fused_vocab_loss(True)
    return x, w, b, targets


def drawn(spread, seed=0, n=303, v=32000, d=256):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).bfloat16()
    w = torch.randn(v, d, generator=g) * 0.05 * spread
    b = torch.randn(v, generator=g) * 0.1
    return x, w, b, torch.randint(0, v, (n,), generator=g)


def report(name, x, w, b, t):
    n = x.shape[0]
    logits, row_max, row_total = native.vocab_forward(x, w, b, statistics=True)
    z = logits.double()
    top = z.max(1, keepdim=True).values
    total = (z - top).exp().sum(1)
    ref_losses = total.log() + top.squeeze(1) - z.gather(1, t[:, None]).squeeze(1)
    ref = (z - top).exp() / total[:, None]
    ref[torch.arange(n), t] -= 1
    ref /= n
    old_losses, old = native.cross_entropy(logits, t, 1.0 / n)
    new_losses = row_total.log() + row_max - logits.float().gather(1, t[:, None]).squeeze(1)
    new = torch.stack([native.vocab_backward(logits[r:r + 1].contiguous(), x[r:r + 1].contiguous(), w, False, False,
                                             True, loss=(t[r:r + 1], row_max[r:r + 1], row_total[r:r + 1], 1.0 / n))[2]
                       for r in range(n)])
    print(f"{name}: logits {tuple(logits.shape)}, range {float(z.min()):.2f} .. {float(z.max()):.2f}")
    print(f"  logits with statistics the same bits as without: {torch.equal(logits, native.vocab_forward(x, w, b))}")
    print(f"  row max the max of the bf16 logits (xm_cross_entropy's): "
          f"{torch.equal(row_max, logits.float().max(1).values)}")
    print(f"  row sum against float64: max relative error {float(((row_total.double() - total) / total).abs().max()):.2e}")
    print(f"  loss (mean) against float64: fused {float(new_losses.double().mean() - ref_losses.mean()):+.2e}, main "
          f"{float(old_losses.double().mean() - ref_losses.mean()):+.2e}; per row max |error| fused "
          f"{float((new_losses.double() - ref_losses).abs().max()):.2e}, main "
          f"{float((old_losses.double() - ref_losses).abs().max()):.2e}")
    differ = new != old.float()
    nearest = ref.to(torch.bfloat16).float()
    print(f"  dlogits ({new.numel():,} values): {int(differ.sum())} differ from main's (largest "
          f"{float((new - old.float()).abs().max()):.2e}, each "
          f"{'one' if bool(((new - old.float()).abs()[differ] <= old.float().abs()[differ] / 128).all()) else 'MORE THAN ONE'} "
          f"bf16 rounding); not float64's nearest bf16: fused {int((new != nearest).sum())}, main "
          f"{int((old.float() != nearest).sum())}; sum |error| fused {float((new.double() - ref).abs().sum()):.9e}, "
          f"main {float((old.double() - ref).abs().sum()):.9e}")
    fused = native.vocab_backward(logits, x, w, loss=(t, row_max, row_total, 1.0 / n))
    main = native.vocab_backward(old, x, w)
    w16, xd = w.bfloat16().double(), x.double()
    wants = (ref @ w16, ref.T @ xd, ref.sum(0))
    for label, f, m, want in zip(("dX", "dW", "db"), fused, main, wants):
        print(f"  {label}: same bits as main's {torch.equal(f, m)} (max |diff| {float((f.double() - m.double()).abs().max()):.2e}); "
              f"max |error| against float64 fused {float((f.double() - want).abs().max()):.3e}, main "
              f"{float((m.double() - want).abs().max()):.3e}; sum |error| fused {float((f.double() - want).abs().sum()):.6e}, "
              f"main {float((m.double() - want).abs().sum()):.6e}")


report("the bench step's inputs", *step_inputs())
report("drawn, spread 1", *drawn(1.0))
report("drawn, spread 30", *drawn(30.0, seed=1))
