import torch, sys, contextlib
from torch.profiler import profile, ProfilerActivity
import xmodlm
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config
xmodlm.tune_allocator()
config = make_config(4, 256, 32000, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
ids, lang, labels = batch_for(config, 16, 128, 8)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
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
