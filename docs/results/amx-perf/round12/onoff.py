"""All the own kernels on against all off (``kernels.use_amx_kernels``), alternating in one process, on this processor:
the bench's bf16 MLM training step (4 x 256, vocab 32k, 8 languages, 16 x 128 mixed, fused AdamW) and the bench's
bf16 inference forward (xmod-base shape 12 x 768, 81 languages, 8 x 128 mixed). On a processor without AMX "off" is
what the code before round 12 ran there (torch's and oneDNN's ops); "on" the vector kernels.

    PYTHONPATH=src python3 docs/results/amx-perf/round12/onoff.py [rounds] [threads]
"""
import statistics, subprocess, sys, time
import torch, xmodlm
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
threads = int(sys.argv[2]) if len(sys.argv) > 2 else torch.get_num_threads()
torch.set_num_threads(threads); xmodlm.tune_allocator()
from xmodlm import kernels
from xmodlm.model import XmodForMaskedLM, XmodModel
from xmodlm.recipes.bench import batch_for, make_config

print(f"# {' '.join(sys.argv)}; threads {threads}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
      + f"; AMX tiles {kernels.native.available()}, vector kernels {kernels.native.vector_available()}")


def compare(name, run, rounds):
    times = {"off": [], "on": [], "on2": []}
    for r in range(rounds + 2):
        for variant in times:
            kernels.use_amx_kernels(variant != "off")
            start = time.perf_counter(); run(); elapsed = time.perf_counter() - start
            if r >= 2:
                times[variant].append(elapsed)
    kernels.use_amx_kernels(True)
    off = statistics.median(times["off"])
    print(f"{name}: off {off * 1e3:.1f} ms, on {statistics.median(times['on']) * 1e3:.1f} ms "
          f"({off / statistics.median(times['on']):.3f}x), on again {statistics.median(times['on2']) * 1e3:.1f} ms "
          f"({off / statistics.median(times['on2']):.3f}x); medians of {rounds}, mins "
          + ", ".join(f"{k} {min(v) * 1e3:.1f}" for k, v in times.items()))


config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
ids, lang, labels = batch_for(config, 16, 128, 8)


def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)


compare("bf16 MLM training step 4x256 V=32k 8 langs 16x128", step, rounds)
del model, opt
config = make_config(12, 768, 250002, 81, 128)
torch.manual_seed(0)
encoder = XmodModel(config).eval().bfloat16()
ids, lang, _ = batch_for(config, 8, 128, 81)


def forward():
    with torch.no_grad():
        encoder(input_ids=ids, lang_ids=lang)


compare("bf16 encoder forward 12x768 81 langs 8x128", forward, rounds)
