"""oneDNN's per-call cost: _linear_pointwise and mm on bf16 operands at small-batch shapes against the time their FLOPs
would take at 1.5 TFLOP/s (best of 5 x 200 calls). One thread.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_onednn.py
"""
import timeit, torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
for rows, d, out in ((128, 64, 192), (128, 256, 768), (128, 256, 256), (2048, 256, 768)):
    x = torch.randn(rows, d).bfloat16(); w = torch.randn(out, d).bfloat16(); b = torch.randn(out).bfloat16()
    g = torch.randn(rows, out).bfloat16()
    f1 = lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [None], "")
    f2 = lambda: g.mm(w)
    t1 = min(timeit.repeat(f1, number=200, repeat=5)) / 200 * 1e6
    t2 = min(timeit.repeat(f2, number=200, repeat=5)) / 200 * 1e6
    print(f"rows {rows} d {d} out {out}: linear_pointwise {t1:.1f} us, mm {t2:.1f} us, flops-time at 1.5 TF/s {2*rows*d*out/1.5e12*1e6:.1f} us")
