import torch, sys
from torch.profiler import profile, ProfilerActivity
from _shapes import mlm_small
config, model, ids, lang, labels, opt = mlm_small()
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=sys.argv[1:2] != ["fp32"]):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3): step()
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    step()
ev = prof.key_averages(group_by_input_shape=True)
rows = sorted(ev, key=lambda e: -e.self_cpu_time_total)
for e in rows[:45]:
    print(f"{e.self_cpu_time_total/1e3:7.2f} ms {e.count:4d}x {e.key:28s} {str(e.input_shapes)[:150]}")
