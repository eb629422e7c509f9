"""Shared by this round's scripts: the product kernel of native.c as of a base commit (the whole K of a 32 x 32
block at a time) and with K blocked (kblock-v2.diff applied: K_BLOCK values of K per pass over a chunk's row
blocks, the partial sums stored and reloaded between K-blocks) at several block sizes, each its own library (round
9's harness.build), and the products' outputs compared bit for bit."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "round9"))
from harness import Inside, build, old_source, replaced  # noqa: E402,F401

from xmodlm.kernels import native  # noqa: E402

def libraries(base: str, blocks: tuple, control: bool = False, extra: dict | None = None) -> dict:
    """{name: library}: base's native.c ("base"), with `control` a second copy of it ("base again": the spread
    between two identical libraries), then `extra` ({name: native.c text}), then today's with K_BLOCK set to
    each of `blocks`."""
    sources = {"base": old_source(base)}
    blocked = patched(base, "kblock-v2.diff")
    if control:
        sources["base again"] = sources["base"] + "\n"
    sources.update(extra or {})
    for size in blocks:
        sources[f"kb{size}"] = replaced(blocked, "#define K_BLOCK 256\n", f"#define K_BLOCK {size}\n")
    return build(sources)


def patched(base: str, diff: str) -> str:
    """base's native.c with this folder's `diff` applied (a variant kept as a diff file)."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "native.c"
        path.write_text(old_source(base))
        subprocess.run(["patch", "-s", str(path), str(Path(__file__).parent / diff)], check=True)
        return path.read_text()


def products(x, w, b, n, act, residual, norm):
    return native.segments_linear(x, (x.shape[0],), (w,), (b,), n, act, residual, True, norm)


def check_bits(libs: dict) -> list:
    """Lines saying whether each library's outputs equal the first's, for products with and without bias, GELU,
    residual and norm, row counts off the 32 grid (the padded block), several segments, and the modules."""
    g = torch.Generator().manual_seed(1)
    lines = []
    cases = []
    for rows, k, n, act, res, bias, norm in [(1024, 768, 2304, None, False, True, False),
                                             (1024, 768, 768, None, True, True, True),
                                             (1024, 768, 3072, "gelu", False, True, False),
                                             (1024, 3072, 768, None, True, True, False),
                                             (77, 3072, 768, None, True, True, True), (200, 800, 96, "gelu", True, False, False),
                                             (13, 288, 64, None, False, True, False), (161, 768, 384, "gelu", False, True, False),
                                             (300, 1056, 160, None, True, False, True), (31, 96, 32, None, False, False, False)]:
        x = torch.randn(rows, k, generator=g).bfloat16()
        w = native.pack((torch.randn(n, k, generator=g) / k ** 0.5).bfloat16())
        b = torch.randn(n, generator=g) if bias else None
        r = torch.randn(rows, n, generator=g).bfloat16() if res else None
        nm = (torch.randn(n, generator=g).bfloat16(), torch.randn(n, generator=g).bfloat16(), 1e-5) if norm else None
        cases.append((f"{rows}x{k}->{n} act={act} residual={res} bias={bias} norm={norm}", (x, w, b, n, act, r, nm)))
    segs = [37, 128, 5, 200, 64, 1, 90, 33]
    d, rr = 768, 384
    x = torch.randn(sum(segs), d, generator=g).bfloat16()
    first = [(native.pack((torch.randn(rr, d, generator=g) / d ** 0.5).bfloat16()), torch.randn(rr, generator=g))
             for _ in segs]
    second = [(native.pack((torch.randn(d, rr, generator=g) / rr ** 0.5).bfloat16()), torch.randn(d, generator=g))
              for _ in segs]
    res = torch.randn(sum(segs), d, generator=g).bfloat16()
    nm = (torch.randn(d, generator=g).bfloat16(), torch.randn(d, generator=g).bfloat16(), 1e-5)
    names = list(libs)
    outs = {name: [] for name in names}
    for name in names:
        native._STATE["lib"] = libs[name]
        for _, args in cases:
            outs[name].append(products(*args))
        outs[name].append(native.modules(x, segs, first, second, res, nm))
        outs[name].append(native.segments_linear(x, segs, [f[0] for f in first], [f[1] for f in first], rr, "gelu",
                                                 None, False, None))
    labels = [c[0] for c in cases] + [f"modules {segs} 768->384->768 residual norm",
                                      f"segments {segs} 768->384 gelu, columns split"]
    for i, label in enumerate(labels):
        same = [name for name in names[1:] if torch.equal(outs[name][i], outs[names[0]][i])]
        lines.append(f"  {label}: bit-identical to {names[0]}: {', '.join(same) or 'none'}"
                     + ("" if len(same) == len(names) - 1 else "   MISMATCH"))
    native._STATE["lib"] = libs[names[0]]
    return lines


class Product:
    """One product's call of xm_linear with its buffers made once (the output too: no allocation in the timed
    calls, whose addresses would otherwise differ from call to call): rows x k -> n, bias, act, residual."""

    def __init__(self, rows, k, n, act, residual, g):
        import ctypes
        self.x = torch.randn(rows, k, generator=g).bfloat16()
        self.plain = (torch.randn(n, k, generator=g) / k ** 0.5).bfloat16()
        self.w, self.b = native.pack(self.plain), torch.randn(n, generator=g)
        self.r = torch.randn(rows, n, generator=g).bfloat16() if residual else None
        self.out = torch.empty(rows, n, dtype=torch.bfloat16)
        self.args = ((ctypes.c_int64 * 1)(rows), (ctypes.c_uint64 * 1)(self.w.data_ptr()),
                     (ctypes.c_uint64 * 1)(self.b.data_ptr()), self.x.data_ptr(), k,
                     None if self.r is None else self.r.data_ptr(), n if residual else 0, self.out.data_ptr(), n, n,
                     k, 1 if act else 0, 1, 0, None, None, ctypes.c_float(0.0))
        self.flops = 2 * rows * k * n

    def __call__(self, lib):
        if lib.xm_linear(1, *self.args) != 0:
            raise MemoryError
        return self.out
