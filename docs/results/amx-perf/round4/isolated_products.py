# isolated bf16 products at 2 threads: oneDNN fused (packed) against the own AMX kernel, columns or rows split between threads
# PYTHONPATH=src python3 docs/results/amx-perf/round4/isolated_products.py
import torch, time, sys
from xmodlm.kernels.linear import _fused
from xmodlm.kernels import native
torch.manual_seed(0); torch.set_num_threads(2)
def med(f,reps=20):
    for _ in range(3): f()
    ts=[]
    for _ in range(reps):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
M=1024
for K,N,act,res,rows in [(768,2304,None,False,(1024,)),(768,768,None,True,(1024,)),(768,3072,'gelu',False,(1024,)),(3072,768,None,True,(1024,)),(768,384,'gelu',False,(128,256,128,128,128,128,128)),(384,768,None,True,(128,256,128,128,128,128,128))]:
    m=sum(rows)
    x=torch.randn(m,K).bfloat16(); ws=[(torch.randn(N,K)/30).bfloat16() for _ in rows]; b=torch.randn(N).bfloat16(); r=torch.randn(m,N).bfloat16() if res else None
    pa=[native.pack(w) for w in ws]; bf=[b.float()]*len(rows)
    fl=2*m*K*N/1e9
    ref = native.segments_linear(x,rows,pa,bf,N,act,r,False)
    assert torch.equal(ref, native.segments_linear(x,rows,pa,bf,N,act,r,True))
    wp=torch.ops.mkldnn._reorder_linear_weight(ws[0]) if len(rows)==1 else None
    onednn = "oneDNN fused %.0f "%(fl/med(lambda:_fused(x,wp,b,act,r))) if wp is not None else ""
    print((m,K,N,act,res,len(rows)), onednn + "own cols %.0f"%(fl/med(lambda: native.segments_linear(x,rows,pa,bf,N,act,r,False))), "rows %.0f"%(fl/med(lambda: native.segments_linear(x,rows,pa,bf,N,act,r,True))), flush=True)
