import torch, time, statistics
import torch.nn.functional as F
Ws=[(torch.randn(32000,256)*0.02).bfloat16() for _ in range(3)]
b=torch.zeros(32000).bfloat16(); x=torch.randn(303,256).bfloat16()
L=torch.ops.mkldnn._linear_pointwise
modes={"addmm (autocast's F.linear)": lambda W: F.linear(x,W,b), "oneDNN linear": lambda W: L(x,W,b,"none",[None],""),
       "oneDNN, 304 rows": lambda W: L(F.pad(x,(0,0,0,1)),W,b,"none",[None],"")}
T={k:[] for k in modes}
for r in range(12):
    for k,f in modes.items():
        s=time.perf_counter()
        for W in Ws: f(W)
        T[k].append((time.perf_counter()-s)/3)
for k in T: t=statistics.median(T[k][2:]); print(f"{k}: {t*1e3:.2f} ms {2*303*256*32000/t/1e9:.0f} GFLOP/s")
