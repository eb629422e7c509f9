"""A/B of kernel builds in one process: python ab_kernels.py "native_a.c|-DFLAG" "native_b.c|" ...; the forwards alternate between the builds (the same C signatures needed). FORCE= the tuner's choice (default: the own kernel, rows split; empty: tuned)."""
import ctypes, os, sys, time, statistics, subprocess, hashlib, torch
from pathlib import Path
import xmodlm, xmodlm.model as model_mod
from xmodlm.kernels import native
from forward_setup import xmod_base_forward  # run with this folder on sys.path (python3 <this folder>/<script>)
libs=[]
for spec in sys.argv[1:]:
    src, _, defs = spec.partition("|")
    native.SOURCE = Path(src); native.FLAGS = FL = tuple(f for f in native.FLAGS if not f.startswith("-D")) + tuple(defs.split())
    os.environ.setdefault("XMODLM_KERNEL_CACHE", "/tmp/xmodlm-ab-cache")
    native._STATE.update(tried=False, lib=None)
    native._library(); assert native._STATE["lib"] is not None, native._STATE["reason"]
    libs.append((spec, native._STATE["lib"]))
force=os.environ.get("FORCE","AMX kernel, rows split")
if force: xmodlm.kernels.use_autotune(True, force=force)
model, ids, lang = xmod_base_forward()
times={s:[] for s,_ in libs}; outs={}
with torch.no_grad():
    for s,l in libs:
        native._STATE["lib"]=l
        for _ in range(2): outs[s]=model(ids, lang_ids=lang).last_hidden_state.float()
    for _ in range(int(os.environ.get("N",12))):
        for s,l in libs:
            native._STATE["lib"]=l
            t=time.perf_counter(); model(ids, lang_ids=lang); times[s].append(time.perf_counter()-t)
base=statistics.median(times[libs[0][0]])
for s,_ in libs:
    m=statistics.median(times[s])
    print(f"{s}: median {m*1e3:.1f} ms ({base/m:.3f}x first) min {min(times[s])*1e3:.1f}; max diff vs first {(outs[s]-outs[libs[0][0]]).abs().max():.3g}")
