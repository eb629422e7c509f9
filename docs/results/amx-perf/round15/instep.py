"""Each fp32 weight-gradient product of the bench step timed inside the step, and once more right after on the same
operands (the repeat's result thrown away)."""
import time, collections, statistics, sys, torch
from xmodlm.kernels import linear
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import make_config, batch_for
if len(sys.argv) > 1 and sys.argv[1] == "ftz":
    torch.set_flush_denormal(True)
torch.manual_seed(0)
cfg = make_config(4, 256, 32000, 8, 128)
m = XmodForMaskedLM(cfg).train()
ids, lang, labels = batch_for(cfg, 16, 128, 8)
opt = torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True)
rec = collections.defaultdict(lambda: ([], []))
forms = dict(linear.WEIGHT_GRADIENTS)
def timed(name):
    f = forms[name]
    def g(grad2, x2):
        a = time.perf_counter(); out = f(grad2, x2); b = time.perf_counter()
        f(grad2, x2); c = time.perf_counter()
        key = (name, tuple(grad2.shape), tuple(x2.shape), grad2.stride(), x2.stride())
        rec[key][0].append(b - a); rec[key][1].append(c - b)
        return out
    return g
for name in forms:
    linear.WEIGHT_GRADIENTS[name] = timed(name)
def step():
    loss = m(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(2): step()
rec.clear()
for _ in range(4): step()
for k, (a, b) in sorted(rec.items()):
    print(k, f"in step {statistics.median(a)*1e3:6.2f} ms, repeated {statistics.median(b)*1e3:6.2f} ms, calls {len(a)}")
print("denormal flush:", len(sys.argv) > 1)
