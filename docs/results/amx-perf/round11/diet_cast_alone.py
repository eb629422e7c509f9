"""torch's float32 -> bf16 cast of the shared linears' weight shapes alone, hot in cache, one thread: `.to(bf16)`, a copy_
into a kept bf16 tensor, and the allocation alone; 500 calls each after 50.

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round11/diet_cast_alone.py
"""
import time, torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
for shape in ((256,256),(768,256),(1024,256),(256,1024)):
    w = torch.randn(shape)
    out = torch.empty(shape, dtype=torch.bfloat16)
    for name, f in (("to", lambda: w.to(torch.bfloat16)), ("copy_ into kept", lambda: out.copy_(w)), ("empty", lambda: torch.empty(shape, dtype=torch.bfloat16))):
        for _ in range(50): f()
        t=time.perf_counter()
        for _ in range(500): f()
        print(shape, name, f"{(time.perf_counter()-t)/500*1e6:.1f} us")
