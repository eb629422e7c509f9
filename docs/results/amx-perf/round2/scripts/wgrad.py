import torch, time, statistics
R=6
for (n,din,dout) in ((2048,256,1024),(2048,1024,256),(2048,256,768)):
    xs=[torch.randn(n,din).bfloat16() for _ in range(R)]; gs=[torch.randn(n,dout).bfloat16() for _ in range(R)]
    modes={"x.t() @ g (autocast's)": lambda i: xs[i].t().mm(gs[i]),
           "g.t() @ x": lambda i: gs[i].t().mm(xs[i]),
           "contiguous x.t() @ g": lambda i: xs[i].t().contiguous().mm(gs[i]),
           "contiguous g.t() @ x": lambda i: gs[i].t().contiguous().mm(xs[i])}
    T={k:[] for k in modes}
    for r in range(10):
        for k,f in modes.items():
            t=time.perf_counter()
            for i in range(R): f(i)
            T[k].append((time.perf_counter()-t)/R)
    fl=2*n*din*dout
    print((n,din,dout), {k:f"{statistics.median(v[2:])*1e3:.2f}ms/{fl/statistics.median(v[2:])/1e9:.0f}" for k,v in T.items()})
