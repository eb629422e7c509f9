"""bf16 autocast against fp32 training steps on this processor, alternating in one process, at the demo's size
(width 64, 4 layers, vocabulary 2,000, 6 languages, 32 x 64 tokens) and at the bench's (width 256, vocab 32k, 8
languages, 16 x 128): which precision `--precision auto` should pick without AMX.

    PYTHONPATH=src python3 docs/results/amx-perf/round12/precision_ab.py [rounds]
"""
import statistics, subprocess, sys, time
import torch, xmodlm
xmodlm.tune_allocator()
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
print(f"# {' '.join(sys.argv)}; threads {torch.get_num_threads()}; "
      f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}; "
      f"{time.strftime('%F %T', time.gmtime())} UTC; "
      + next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')))
for name, (layers, width, vocab, langs, batch, seq) in {"demo size": (4, 64, 2000, 6, 32, 64),
                                                       "bench size": (4, 256, 32000, 8, 16, 128)}.items():
    config = make_config(layers, width, vocab, langs, seq)
    torch.manual_seed(0)
    model = XmodForMaskedLM(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids, lang, labels = batch_for(config, batch, seq, langs)
    times = {"fp32": [], "bf16": []}
    for r in range(rounds + 3):
        for precision in times:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
            if r >= 3:
                times[precision].append(time.perf_counter() - start)
    fp32, bf16 = (statistics.median(times[p]) for p in ("fp32", "bf16"))
    print(f"{name} ({width} wide, {batch} x {seq}): fp32 {fp32 * 1e3:.1f} ms, bf16 autocast {bf16 * 1e3:.1f} ms a step; "
          f"bf16 {fp32 / bf16:.2f}x fp32's speed (medians of {rounds})")
