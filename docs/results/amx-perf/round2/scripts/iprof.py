import torch
from torch.profiler import profile, ProfilerActivity
import xmodlm
from xmodlm.model import XmodModel
from xmodlm.recipes.bench import batch_for, make_config
xmodlm.tune_allocator()
config = make_config(12, 768, 250002, 81, 128)
torch.manual_seed(0)
m = XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
with torch.no_grad():
    for _ in range(3): m(ids, lang_ids=lang)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        m(ids, lang_ids=lang)
for e in sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:25]:
    print(f"{e.self_cpu_time_total/1e3:7.2f} ms {e.count:4d}x {e.key:34s} {str(e.input_shapes)[:120]}")
