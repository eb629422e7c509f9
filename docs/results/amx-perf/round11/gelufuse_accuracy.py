"""GELU's input gradient in the bf16 training step, today's (dg = dY W rounded to bf16, then round_bf16(dg * slope), the
slope float32: the product by aten::mm, the pass by native.gelu_table_backward) against the fused one (round_bf16((dY W)
* s) in the product's epilogue, s the slope rounded to bf16: oneDNN's binary "mul"), both on the step's own tensors
(dY, W and h of each layer's feed-forward, captured from the bench's training step, benchmarks/train_breakdown.py's
build("bf16"), its third step) and both against float64: dh64 = (dY W in float64) * GELU'(h) in float64, rounded once
to bf16 (correctly: the nearest of the three bf16 values around float64's).
Printed per layer: the fraction of values equal to float64's nearest bf16 (over dh64 != 0: in the last layer only the
masked tokens' rows have a gradient, the other 85% are zeros, exact in both), the relative error |dh - dh64| / |dh64|
(mean, max over dh64 != 0), the norm-wise ||dh - dh64|| / ||dh64||; then the FF-in weight's and bias's gradients from
each dh (the own kernel's float32 sums over the step's FF input, as the step makes them) against float64's from dh64
(the gradient of the parameters this change reaches first); then the whole step's parameter gradients, fused against
today's (norm-wise relative differences: how far the change moves them).
Usage: taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/gelufuse_accuracy.py"""

import math
import sys
from pathlib import Path

import torch

import xmodlm

torch.set_num_threads(1)
xmodlm.tune_allocator()
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
from train_breakdown import build, step_phases  # noqa: E402
from xmodlm.kernels import gelu, native  # noqa: E402
from xmodlm.kernels.amp import parameter_grads  # noqa: E402

captured = {}  # g's address -> (h, x16 of the FF-in product, w16); then + dY from the backward
layers = []
original_product, original_backward = gelu.gelu_product, gelu._GeluProduct.backward


def keep_forward(x, pair, weight, bias):
    h = pair[0]
    captured[x.data_ptr()] = (h.detach().clone(), h.grad_fn.saved_tensors[0].detach().clone(),
                              weight.detach().bfloat16())
    return original_product(x, pair, weight, bias)


def keep_backward(ctx, grad):
    g = ctx.saved_tensors[0]
    layers.append(captured[g.data_ptr()] + (grad.detach().bfloat16().reshape(-1, grad.shape[-1]).clone(),))
    return original_backward(ctx, grad)


gelu.gelu_product = keep_forward
sys.modules["xmodlm.kernels.linear"].gelu_product = keep_forward
gelu._GeluProduct.backward = staticmethod(keep_backward)
step, _, _ = build("bf16")
for i in range(3):
    captured.clear()
    layers.clear()
    step()
gelu._GeluProduct.backward = staticmethod(original_backward)
sys.modules["xmodlm.kernels.linear"].gelu_product = original_product


def slope64(h):
    x = h.double()
    return 0.5 * torch.special.erfc(-x / 2 ** 0.5) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def nearest_bf16(v):
    """float64 v rounded once to bf16 (torch converts float64 through float32: two roundings)."""
    b = v.bfloat16()
    bits = b.float().view(torch.int32)
    candidates = torch.stack([b.double(), (bits + 0x10000).view(torch.float32).double(),
                              (bits - 0x10000).view(torch.float32).double()])
    best = (candidates - v).abs().nan_to_num(math.inf).argmin(0)  # below +0 lies a NaN bit pattern
    return torch.where(v == 0, b, candidates.gather(0, best[None])[0].bfloat16())


def errors(dh, ref64, ref16):
    d = dh.double()
    nz = ref64 != 0
    rel = ((d - ref64).abs() / ref64.abs())[nz]
    return ((dh == ref16)[nz].double().mean().item(), rel.mean().item(), rel.max().item(),
            ((d - ref64).norm() / ref64.norm()).item())


print(f"{len(layers)} feed-forward outputs (layers last to first), {tuple(layers[0][0].shape)} values each; h's "
      f"standard deviation {', '.join(f'{h.float().std().item():.2f}' for h, *_ in layers)}, its share above 0.75 "
      f"(GELU' > 1) {', '.join(f'{(h.float() > 0.75).double().mean().item() * 100:.1f}%' for h, *_ in layers)}")
print(f"{'layer':>5s} {'path':6s} {'= f64 bf16':>10s} {'mean rel':>9s} {'max rel':>9s} {'norm rel':>9s}   "
      f"{'dW_in norm rel':>14s} {'db_in norm rel':>14s}")
totals = {"today": [], "fused": []}
for i, (h, x16, w16, dy) in enumerate(layers):
    h2 = h.reshape(-1, h.shape[-1])
    ref64 = (dy.double() @ w16.double()) * slope64(h2)
    ref16 = nearest_bf16(ref64)
    g, s = native.gelu_table_pair(h2.contiguous())
    today = native.gelu_table_backward(dy.mm(w16), h2.contiguous())
    fused = torch.ops.mkldnn._linear_pointwise.binary(dy, s, w16.t(), None, "mul")
    x2 = x16.reshape(-1, x16.shape[-1]).double()
    dw64, db64 = ref64.t() @ x2, ref64.sum(0)
    for name, dh in (("today", today), ("fused", fused)):
        dw, db = parameter_grads(dh, x16.reshape(-1, x16.shape[-1]), True, True)
        e = errors(dh, ref64, ref16)
        wr = ((dw.double() - dw64).norm() / dw64.norm()).item()
        br = ((db.double() - db64).norm() / db64.norm()).item()
        totals[name].append(e + (wr, br))
        print(f"{len(layers) - 1 - i:5d} {name:6s} {e[0] * 100:9.3f}% {e[1]:9.2e} {e[2]:9.2e} {e[3]:9.2e}   "
              f"{wr:14.3e} {br:14.3e}")
for name, rows in totals.items():
    avg = [sum(r[k] for r in rows) / len(rows) for k in range(6)]
    print(f"  all {name:6s} {avg[0] * 100:9.3f}% {avg[1]:9.2e} {max(r[2] for r in rows):9.2e} {avg[3]:9.2e}   "
          f"{avg[4]:14.3e} {avg[5]:14.3e}  (mean over layers; max rel: the largest)")

# the whole step's parameter gradients, fused against today's, from the same model state
from train_breakdown import make_config, batch_for  # noqa: E402
from xmodlm.model import XmodForMaskedLM  # noqa: E402
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
grads = {}
for on in (False, True, False):
    gelu.use_fused_gelu_grad(on)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward()
    grads.setdefault(on, []).append({n: p.grad.double().clone() for n, p in model.named_parameters()
                                     if p.grad is not None})
    model.zero_grad(set_to_none=True)
gelu.use_fused_gelu_grad(True)
base, fused, again = grads[False][0], grads[True][0], grads[False][1]
print("whole step (same weights, same dropout draws): parameter gradients, norm-wise relative difference (the key "
      "projections' biases left out: their exact gradient is zero, softmax being blind to them, so theirs is rounding "
      "noise alone)")
print(f"  today, run twice: largest {max(((again[n] - base[n]).norm() / base[n].norm()).item() for n in base):.2e}")
diffs = sorted((((fused[n] - base[n]).norm() / base[n].norm()).item(), n) for n in base if not n.endswith("key.bias"))
print(f"  fused vs today: median {diffs[len(diffs) // 2][0]:.2e}, largest {diffs[-1][0]:.2e} ({diffs[-1][1]})")
for d, n in diffs[-5:-1][::-1]:
    print(f"    {d:.2e} {n}")
