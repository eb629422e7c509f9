"""The own kernels' wrappers in the small-batch step: per step, the time inside each C call (ctypes) and inside its Python wrapper
(native.py), and inside _BiasInProduct's forward and backward, by timers wrapped around them (each adds ~0.3 us a call).

    taskset -c 1 env OMP_NUM_THREADS=1 PYTHONPATH=src python3 docs/results/amx-perf/round10/floor_inner.py HIDDEN VOCAB
"""
import statistics, sys, time, collections
import torch, xmodlm
torch.set_num_threads(1); xmodlm.tune_allocator()
from xmodlm.kernels import native, amp
from xmodlm.model import XmodForMaskedLM
from xmodlm.recipes.bench import batch_for, make_config
hidden, vocab = int(sys.argv[1]), int(sys.argv[2])
config = make_config(4, hidden, vocab, 8, 128)
torch.manual_seed(0)
model = XmodForMaskedLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
ids, lang, labels = batch_for(config, 8, 16, 8)
acc = collections.defaultdict(float)
def timed(name, fn):
    def w(*a, **k):
        s = time.perf_counter()
        try: return fn(*a, **k)
        finally: acc[name] += time.perf_counter() - s
    return w
lib = native._library()
for fname in ("xm_weight_grad", "xm_modules_train", "xm_modules_train_backward", "xm_residual_norm", "xm_residual_norm_backward",
              "xm_attention_train", "xm_attention_train_backward", "xm_keep_mask", "xm_gelu_table", "xm_gelu_table_backward",
              "xm_vocab_forward", "xm_vocab_backward"):
    f = getattr(lib, fname)
    setattr(lib, fname, timed("C " + fname, f))
for fname in ("weight_grad", "modules_train", "modules_train_backward", "residual_norm", "residual_norm_backward",
              "training_attention", "training_attention_backward", "keep_mask", "gelu_table", "gelu_table_backward"):
    setattr(native, fname, timed("py " + fname, getattr(native, fname)))
amp._BiasInProduct.backward = staticmethod(timed("_BiasInProduct.backward", amp._BiasInProduct.backward))
amp._BiasInProduct.forward = staticmethod(timed("_BiasInProduct.forward", amp._BiasInProduct.forward))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, lang_ids=lang, labels=labels).loss
    loss.backward(); opt.zero_grad(set_to_none=True)
for _ in range(5): step()
acc.clear()
s = time.perf_counter()
for _ in range(30): step()
print("step %.2f ms" % ((time.perf_counter() - s) / 30 * 1e3))
for k, v in sorted(acc.items()): print(f"{k:40s} {v / 30 * 1e3:7.3f} ms/step")
