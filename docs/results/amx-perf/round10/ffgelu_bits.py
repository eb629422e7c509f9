"""Bits of the feed-forward input's product + GELU in one call of the own kernel (native.linear_gelu_table, used by
gelu._ProductTableGelu) against today's two functions (oneDNN's product with the bf16 bias inside, then the GELU
table's pass): h against oneDNN's h (and both against float64's sum rounded once to bf16), g, and the gradients of
x, W, b through both autograd paths under bf16 autocast. Random inputs at the bench's shape (2048 x 256 -> 1024), a
bigger model's (2048 x 768 -> 3072) and a ragged row count; several seeds and scales; and the kernel's other
placements of the lookup (sweep 1, 2) and thread splits (rows, columns) against its epilogue's h and g.
Usage (with round10/ffgelu.diff applied): taskset -c 0 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/ffgelu_bits.py"""

import torch

import xmodlm

torch.set_num_threads(1)
xmodlm.tune_allocator()
from xmodlm.kernels import amp, gelu, native  # noqa: E402


def bits(t):
    return t.view(torch.int16)


total = {"values": 0, "h differs": 0, "h off by more than one bf16 step": 0}
for (t, k, n) in ((2048, 256, 1024), (2048, 768, 3072), (100, 64, 96)):
    for seed in range(3):
        for scale in (1.0, 4.0):
            torch.manual_seed(seed)
            x = (torch.randn(t, k) * scale).bfloat16().requires_grad_()
            w = (torch.randn(n, k) * k ** -0.5).requires_grad_()
            b = torch.randn(n).requires_grad_()
            dg = torch.randn(t, n).bfloat16()
            w16, b16 = w.detach().bfloat16(), b.detach().bfloat16()
            h_onednn = torch.ops.mkldnn._linear_pointwise(x.detach(), w16, b16, "none", [None], "")
            h_own, g_own = native.linear_gelu_table(x.detach(), native.pack(w16), b16.float(), n)
            modes = [native.linear_gelu_table(x.detach(), native.pack(w16), b16.float(), n, rows, sweep)
                     for sweep in (0, 1, 2) for rows in (True, False)]
            same_modes = all(torch.equal(bits(hm), bits(h_own)) and torch.equal(bits(gm), bits(g_own))
                             for hm, gm in modes)
            exact = (x.detach().double() @ w16.double().t() + b16.double()).bfloat16()
            differ = (bits(h_own) != bits(h_onednn))
            step = (bits(h_own).int() - bits(h_onednn).int()).abs()
            total["values"] += h_own.numel()
            total["h differs"] += int(differ.sum())
            total["h off by more than one bf16 step"] += int((step > 1).sum())
            with torch.autocast("cpu", dtype=torch.bfloat16):
                g_old = gelu.table_gelu(amp.autocast_linear(x, w, b))
            g_old.backward(dg)
            old = [p.grad.clone() for p in (x, w, b)]
            for p in (x, w, b):
                p.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16):
                g_new = gelu.product_gelu(x, w, b)
            g_new.backward(dg)
            new = [p.grad.clone() for p in (x, w, b)]
            for p in (x, w, b):
                p.grad = None
            print(f"{t} x {k} -> {n}, seed {seed}, x scale {scale}: h == oneDNN's h {not differ.any()} "
                  f"({int(differ.sum())} differ); own h == float64 rounded once: "
                  f"{float((bits(h_own) == bits(exact)).float().mean()) * 100:.3f}%, oneDNN's: "
                  f"{float((bits(h_onednn) == bits(exact)).float().mean()) * 100:.3f}%; g == table(oneDNN's h) "
                  f"{torch.equal(bits(g_own), bits(native.gelu_table(h_onednn)))}; autograd g equal "
                  f"{torch.equal(bits(g_old), bits(g_new))}; dx, dW, db equal "
                  f"{[torch.equal(a, c) for a, c in zip(old, new)]}; all 6 placements/splits the same h, g {same_modes}")
print(total)
