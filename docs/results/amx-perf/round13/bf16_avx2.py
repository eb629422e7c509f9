"""bf16 against fp32 on this processor: matrix products and the bench's MLM training step (4 x 256, V=32k, 8 languages,
16 x 128), ours, fp32 and bf16 autocast, alternately, median of N steps each."""
import statistics, sys, time, subprocess, torch
import xmodlm
from xmodlm.kernels import onednn_bf16
from xmodlm.recipes.bench import make_config, batch_for, matmul_ceiling
from xmodlm.model import XmodForMaskedLM
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
print("# PYTHONPATH=src python3 docs/results/amx-perf/round13/bf16_avx2.py", steps, "; commit",
      subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
      ";", time.strftime("%F %T"), "; threads", torch.get_num_threads(), "; capability", torch.backends.cpu.get_cpu_capability(),
      "; oneDNN bf16", onednn_bf16())
for n in (256, 1024):
    r = {dt: max(matmul_ceiling(dt, n, n, n, steps=3).values()) / 1e9 for dt in (torch.float32, torch.bfloat16)}
    print(f"matmul {n}^3: fp32 {r[torch.float32]:.1f} GFLOP/s, bf16 {r[torch.bfloat16]:.2f} GFLOP/s, fp32/bf16 {r[torch.float32]/r[torch.bfloat16]:.0f}x")
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
def step(amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
times = {False: [], True: []}
for i in range(steps + 1):
    for amp in (False, True):
        t = time.perf_counter(); step(amp); dt = time.perf_counter() - t
        if i: times[amp].append(dt)
f, b = statistics.median(times[False]), statistics.median(times[True])
print(f"MLM step 4x256 16x128: fp32 {f*1e3:.0f} ms, bf16 autocast {b*1e3:.0f} ms, bf16/fp32 time {b/f:.1f}x "
      f"(fp32 {[round(x*1e3) for x in times[False]]}, bf16 {[round(x*1e3) for x in times[True]]})")
