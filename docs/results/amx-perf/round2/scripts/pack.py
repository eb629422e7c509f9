import torch, time, sys
torch.manual_seed(0)
M=1024
def t(fn, n=20):
    for _ in range(3): fn()
    best=1e9; ts=[]
    for _ in range(n):
        s=time.perf_counter(); fn(); ts.append(time.perf_counter()-s)
    ts.sort(); return ts[0], ts[len(ts)//2]
for (K,N,act) in [(768,3072,"gelu"),(3072,768,"none"),(768,2304,"none"),(768,768,"none")]:
    x=torch.randn(M,K).bfloat16(); w=torch.randn(N,K).bfloat16()*0.02; b=torch.zeros(N).bfloat16()
    p0=torch.ops.mkldnn._reorder_linear_weight(w)
    p1=torch.ops.mkldnn._reorder_linear_weight(w, M)
    alg = "none" if act=="gelu" else ""
    res={}
    for name,pw in (("nohint",p0),("hint",p1),("plain",w)):
        f=lambda: torch.ops.mkldnn._linear_pointwise(x,pw,b,act,[None],alg)
        bt,md=t(f)
        res[name]=(2*M*K*N/bt/1e9, 2*M*K*N/md/1e9)
    print(K,N,act, {k:f"best {a:.0f} med {m:.0f}" for k,(a,m) in res.items()}, flush=True)
