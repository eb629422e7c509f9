"""The embeddings dropout's mask and scale alone at the step's shape (16 x 128 x 256 float32, p 0.1), one thread: main's
forward (the mask converted to float32, then addcmul), main's backward (addcmul on the kept float32 mask) and the own
kernel (native.mask_scale, either way), 200 calls each, three rounds alternating.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/diet_mask_alone.py
"""
import time, torch, xmodlm
from xmodlm.kernels import native
torch.set_num_threads(1); xmodlm.tune_allocator()
x=torch.randn(16,128,256); keep=(torch.rand(x.shape)>0.1).to(torch.uint8)
fs={"main forward: to + addcmul": lambda: torch.addcmul(x.new_zeros(()), x, keep.to(x.dtype), value=1.1),
    "main backward: addcmul on the kept float32 mask": (lambda m: lambda: torch.addcmul(x.new_zeros(()), x, m, value=1.1))(keep.float()),
    "own kernel (native.mask_scale)": lambda: native.mask_scale(x, keep, 1.1)}
for r in range(3):
  for n,f in fs.items():
    for _ in range(20): f()
    t=time.perf_counter()
    for _ in range(200): f()
    print(n, f"{(time.perf_counter()-t)/200*1e3:.3f} ms")
