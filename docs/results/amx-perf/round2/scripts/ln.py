import torch, time, statistics
import torch.nn.functional as F
xs=[torch.randn(8,128,768).bfloat16() for _ in range(12)]
w=torch.randn(768).bfloat16(); b=torch.randn(768).bfloat16(); wf, bf = w.float(), b.float()
modes={"bf16 weights": lambda x: F.layer_norm(x,(768,),w,b,1e-5), "fp32 weights": lambda x: F.layer_norm(x,(768,),wf,bf,1e-5),
       "no affine": lambda x: F.layer_norm(x,(768,),None,None,1e-5)}
T={k:[] for k in modes}
for r in range(12):
    for k,f in modes.items():
        t=time.perf_counter()
        for x in xs: f(x)
        T[k].append((time.perf_counter()-t)/12)
print({k:f"{statistics.median(v[2:])*1e3:.3f}ms" for k,v in T.items()})
x=xs[0]; ref=F.layer_norm(x.double(),(768,),w.double(),b.double(),1e-5)
for k,f in modes.items():
    if k!="no affine": print(k, (f(x).double()-ref).abs().max().item(), f(x).dtype)
