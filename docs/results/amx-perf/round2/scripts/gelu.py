import torch, time, statistics
import torch.nn.functional as F
M,K,N=1024,768,3072
xs=[torch.randn(M,K).bfloat16() for _ in range(4)]
ws=[torch.ops.mkldnn._reorder_linear_weight((torch.randn(N,K)*0.02).bfloat16()) for _ in range(12)]
b=torch.zeros(N).bfloat16()
L=torch.ops.mkldnn._linear_pointwise
modes={
 "fused gelu(erf)": lambda x,w: L(x,w,b,"gelu",[None],"none"),
 "fused gelu(tanh)": lambda x,w: L(x,w,b,"gelu",[None],"tanh"),
 "none + F.gelu": lambda x,w: F.gelu(L(x,w,b,"none",[None],"")),
 "none only": lambda x,w: L(x,w,b,"none",[None],""),
}
T={k:[] for k in modes}
for r in range(12):
    for k,f in modes.items():
        s=time.perf_counter()
        for i,w in enumerate(ws): f(xs[i%4],w)
        T[k].append((time.perf_counter()-s)/12)
for k in T:
    t=statistics.median(T[k][2:]); print(f"{k}: {t*1e3:.2f} ms  {2*M*K*N/t/1e9:.0f} GFLOP/s")
