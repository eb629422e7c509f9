import torch
from torch.profiler import profile, ProfilerActivity
from _shapes import encoder_bf16
config, m, ids, lang = encoder_bf16()
with torch.no_grad():
    for _ in range(3): m(ids, lang_ids=lang)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        m(ids, lang_ids=lang)
for e in sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:25]:
    print(f"{e.self_cpu_time_total/1e3:7.2f} ms {e.count:4d}x {e.key:34s} {str(e.input_shapes)[:120]}")
