"""The attention kernel alone, 8 x 12 x 128 x 64 (the infer suite's shape), from a given C source, against float32 SDPA:
python3 attention_alone.py path/to/native.c [-DFLAG ...]; run twice alternately for two sources (round 4's is
`git show c672c78..3e32de2`'s src/xmodlm/kernels/native.c). Prints the median of 100 calls and the worst error."""
import ctypes, os, subprocess, sys, tempfile, time
import torch

src, defs = sys.argv[1], sys.argv[2:]
so = os.path.join(tempfile.mkdtemp(), "attention.so")
subprocess.run(["gcc", "-O3", "-mamx-tile", "-mamx-bf16", "-mavx512f", "-mavx512dq", "-mavx512bf16", "-mavx512vl",
                "-mfma", "-fopenmp", "-shared", "-fPIC", *defs, src, "-o", so], check=True)
lib = ctypes.CDLL(so)
P, S = ctypes.c_void_p, ctypes.c_int64
lib.xm_request_amx()
lib.xm_attention.argtypes = [P, P, P, S, S, S, S, S, S, S, P, ctypes.c_float, P]
torch.manual_seed(0)
B, T, H, D = 8, 128, 12, 64
q, k, v = torch.randn(B, T, 3, H, D).bfloat16().permute(2, 0, 3, 1, 4)
out = torch.empty(B, T, H, D, dtype=torch.bfloat16)
def call():
    lib.xm_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), q.stride(1), q.stride(2), B, H, T, D, None,
                     D ** -0.5, out.data_ptr())
for _ in range(5):
    call()
times = []
for _ in range(100):
    start = time.perf_counter(); call(); times.append(time.perf_counter() - start)
ms = sorted(times)[50] * 1e3
exact = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float()).permute(0, 2, 1, 3)
print(f"{src} {defs}: {ms:.3f} ms, {4 * B * H * T * T * D / ms / 1e6:.0f} GFLOP/s, worst error {(out.float() - exact).abs().max():.4f}")
