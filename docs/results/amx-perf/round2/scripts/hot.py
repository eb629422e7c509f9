import torch, time, collections, statistics
import xmodlm, xmodlm.model as mm
from xmodlm.recipes.bench import batch_for, make_config
xmodlm.tune_allocator()
config = make_config(12, 768, 250002, 81, 128)
torch.manual_seed(0)
m = mm.XmodModel(config, add_pooling_layer=False).to(torch.bfloat16).eval()
ids = batch_for(config, 8, 128, 81)[0]
lang = torch.tensor([0, 7, 3, 80, 41, 3, 12, 60])
orig = mm.linear
cold = collections.defaultdict(list); hot = collections.defaultdict(list)
def lin(linears, x, **kw):
    key = (tuple(x.shape), sum(l.out_features for l in linears), kw.get('act'), kw.get('residual') is not None, x.is_contiguous())
    s = time.perf_counter(); y = orig(linears, x, **kw); cold[key].append(time.perf_counter() - s)
    s = time.perf_counter(); orig(linears, x, **kw); hot[key].append(time.perf_counter() - s)
    return y
mm.linear = lin
with torch.no_grad():
    for _ in range(2): m(ids, lang_ids=lang)
    cold.clear(); hot.clear()
    for _ in range(3): m(ids, lang_ids=lang)
for k in cold:
    print(k, f"first {statistics.median(cold[k])*1e3:.2f} ms, repeated {statistics.median(hot[k])*1e3:.2f} ms")
