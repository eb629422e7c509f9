import torch, time, statistics
for dt, shape in ((torch.bfloat16,(16,128,256)), (torch.float32,(16,128,256)), (torch.bfloat16,(16,4,128,128)), (torch.float32,(16,4,128,128))):
    x=torch.randn(shape).to(dt); keep=(torch.rand(shape)>0.1).view(torch.uint8) if False else (torch.rand(shape)>0.1).to(torch.uint8)
    s=1/0.9; z=torch.zeros((),dtype=dt)
    modes={"mul, mul_": lambda: (x*keep).mul_(s), "addcmul": lambda: torch.addcmul(z, x, keep, value=s),
           "where": lambda: torch.where(keep.bool(), x*s, z)}
    T={k:[] for k in modes}
    for r in range(15):
        for k,f in modes.items():
            t=time.perf_counter(); f(); T[k].append(time.perf_counter()-t)
    a=(x*keep).mul_(s); b=torch.addcmul(z,x,keep,value=s)
    print(dt, shape, {k:f"{statistics.median(v[3:])*1e3:.3f}ms" for k,v in T.items()}, "equal", torch.equal(a,b))
