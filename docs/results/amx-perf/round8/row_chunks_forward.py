"""The xmod-base bf16 forward (the bench's infer shape) in one process, alternating xm_linear's rows per chunk: fixed
128 (budget 0) against chunks sized to K (a thread's rows in as few equal chunks as keep each chunk's input within the
budget). Needs row-chunks-attempt.diff applied (xm_set_chunk_bytes). Usage, budgets in KB:
    PYTHONPATH=src python3 docs/results/amx-perf/round8/row_chunks_forward.py 512 1024 1536"""
import sys, statistics, time
import torch
sys.path.insert(0, "benchmarks")
from xmodlm.kernels import native
from xmodlm.model import XmodModel
from xmodlm.recipes.bench import batch_for, make_config
budgets = [0] + [int(b) * 1024 for b in sys.argv[1:]]
config = make_config(12, 768, 250002, 81, 128)
torch.manual_seed(0)
model = XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
lib = native._library()
def call():
    with torch.no_grad():
        return model(ids, lang_ids=lang)
for _ in range(3): call()
times = {b: [] for b in budgets}
outs = {}
for _ in range(int(12)):
    for b in budgets:
        lib.xm_set_chunk_bytes(b)
        s = time.perf_counter(); y = call(); times[b].append(time.perf_counter() - s)
        outs[b] = y.last_hidden_state
print(f"{torch.get_num_threads()} threads")
for b in budgets:
    print(f"budget {b // 1024:5d} KB: median {statistics.median(times[b]) * 1e3:.1f} ms  min {min(times[b]) * 1e3:.1f}  "
          f"ratio to fixed {statistics.median(times[0]) / statistics.median(times[b]):.3f}  same bits {torch.equal(outs[b], outs[0])}")
