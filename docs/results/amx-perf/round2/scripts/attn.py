import torch, time, statistics
import torch.nn.functional as F
B,T,H,D=8,128,12,64
qkvs=[torch.randn(B,T,3*H*D).bfloat16() for _ in range(12)]
def split(qkv): return qkv.view(B,T,3,H,D).permute(2,0,3,1,4).unbind(0)
def model_way(qkv):
    q,k,v=split(qkv); y=F.scaled_dot_product_attention(q,k,v); return y.transpose(1,2).reshape(B,T,H*D)
def contig(qkv):
    q,k,v=(t.contiguous() for t in split(qkv)); y=F.scaled_dot_product_attention(q,k,v); return y.transpose(1,2).reshape(B,T,H*D)
pre=[tuple(t.contiguous() for t in split(q)) for q in qkvs]
def iso(i):
    q,k,v=pre[i]; return F.scaled_dot_product_attention(q,k,v)
y=F.scaled_dot_product_attention(*split(qkvs[0])); print("out strides", y.stride(), y.transpose(1,2).is_contiguous())
modes={"model way (views)": lambda i: model_way(qkvs[i]), "contiguous copies first": lambda i: contig(qkvs[i]), "pre-contiguous (isolated)": iso}
Tm={k:[] for k in modes}
for r in range(10):
    for k,f in modes.items():
        s=time.perf_counter()
        for i in range(12): f(i)
        Tm[k].append((time.perf_counter()-s)/12)
for k in Tm: print(k, "%.2f ms" % (statistics.median(Tm[k][2:])*1e3))
