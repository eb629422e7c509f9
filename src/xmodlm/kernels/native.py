"""Own CPU kernels for bf16 inference on AMX processors (``native.c``): the products (LayerNorm fused on request),
the language modules' two products in one call, LayerNorm, attention; in bf16 autocast training the masked-LM
cross-entropy with its gradient (``cross_entropy``), LayerNorm(dropout(h) + residual) with its backward
(``residual_norm``), softmax attention with its backward (``training_attention``) and the tied vocabulary
projection on the float32 weight (``vocab_forward``, ``vocab_backward``); Dropout's keep mask (``keep_mask``).
Built on first
use by the system's C compiler, loaded through ctypes, called on torch tensors' memory.

Two kinds: the tile kernels (the products, attention, the weight gradients, the vocabulary projection, the training
modules) need AMX (``available()``); the vector kernels (LayerNorm, the residual norm, the cross-entropy, GELU's
tables, dropout's masks and mask-and-scale; without AMX also attention, inference and training, and the weight
gradients, in AVX-512 twins of the tile kernels: ``attention`` calls ``xm_attention_vector``, ``training_attention``
and its backward ``xm_attention_train_vector`` and ``xm_attention_train_backward_vector``, ``weight_grad``
``xm_weight_grad_vector`` there, ``modules`` ``xm_modules_vector``: ``_kernel`` picks) need only AVX-512 with bf16
conversions and products, so they also run on processors
without AMX, AMD's Zen 4 and Zen 5 among them (``vector_available()``). One library serves both: built wherever
``NEEDED`` holds, its AMX instructions only in functions that run where the processor has AMX and the system granted
the tile state. On a 2-core Zen 5 (2026-12-02) the vector kernels made the bench's bf16 training step 1.11-1.14x
faster at one thread (docs/results/amx-perf/round12/vector.md).

Why: oneDNN's bf16 product splits its work between threads by a heuristic that, on a 2-core Xeon with AMX,
ran the 1,024-row products with 768 outputs (attention output, feed-forward output) at 1,100-1,300
GFLOP/s, where its products with more outputs reach 2,500-3,000; the per-language modules' small products
(128-256 rows each) ran at 600-1,000 through every oneDNN formulation. ``native.c`` splits the output columns
between threads, and runs all segments of the language modules in one call. torch's bf16 LayerNorm took
0.17 ms for 1,024 x 768 on two threads in isolation (0.24 ms in the forward), about 5 GB/s.

Plain C, no torch headers: the build takes about a second and needs only a C compiler that knows AMX
(gcc 11+, clang 12+), found as ``$CC``, ``gcc`` or ``cc``. The shared library is cached under
``$XMODLM_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/xmodlm/kernels`` or ``~/.cache/xmodlm/kernels``, named by
the hash of the source, compiler and flags, and written atomically (built beside, then renamed). Where
anything is missing (no AVX-512 with bf16, another OS or architecture, no compiler, a failed build) nothing
changes: ``vector_available()`` and ``available()`` are False, ``vector_reason()`` and ``reason()`` say why, torch's
and oneDNN's paths run; without AMX bf16 or with the system refusing AMX state only the tile kernels are off.
``use_amx_kernels(False)`` switches all the own kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from .cpu import _detected_amx_bf16, amx_bf16, cpu_flags

SOURCE = Path(__file__).with_name("native.c")
FLAGS = ("-O3", "-mamx-tile", "-mamx-bf16", "-mavx512f", "-mavx512dq", "-mavx512bf16", "-mavx512vl", "-mfma",
         "-fopenmp", "-shared", "-fPIC")
# The processor flags the build and the vector kernels need (AVX-512 with bf16 conversions: Zen 4 and later, Xeon
# from Cooper Lake); the tile kernels need AMX besides (TILES). One library for both: the AMX instructions sit in
# functions that only run where the processor has them.
NEEDED = frozenset({"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16"})
TILES = frozenset({"amx_bf16", "amx_tile"})
# The tile kernels with a vector twin in native.c (``<name>_vector``: the same arguments and results by AVX-512's bf16
# pair products), which ``_kernel`` takes where the tile kernels cannot run.
TWINS = ("xm_attention", "xm_attention_train", "xm_attention_train_backward", "xm_weight_grad", "xm_modules")
_STATE: dict = {"enabled": True, "lib": None, "tried": False, "reason": "not built yet", "tiles": False,
                "tiles_reason": "not built yet"}


def use_amx_kernels(enabled: bool) -> None:
    """Use the own AMX kernels where they apply and are built (True, the default) or never (False)."""
    _STATE["enabled"] = bool(enabled)


def cache_dir() -> Path:
    if os.environ.get("XMODLM_KERNEL_CACHE"):
        return Path(os.environ["XMODLM_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xmodlm" / "kernels"


def _compile(compiler: str, target: Path) -> None:
    """Build ``SOURCE`` into ``target`` atomically: into a temporary file in the same folder, then renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=target.parent)
    os.close(handle)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", temporary], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed to build {SOURCE.name}: {done.stderr.strip()[-500:]}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _load() -> tuple[ctypes.CDLL | None, str]:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"needs Linux on x86-64, not {platform.system()} on {platform.machine()}"
    missing = NEEDED - (cpu_flags() or frozenset())
    if missing:
        return None, f"this processor lacks {', '.join(sorted(missing))}"
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        return None, "no C compiler found ($CC, gcc or cc)"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        digest = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
        target = cache_dir() / f"native-{digest}.so"
        if not target.exists():
            _compile(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return None, f"build or load failed: {error}"
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    lib.xm_request_amx.restype = ctypes.c_int
    lib.xm_pack.argtypes = [pointer, pointer, size, size]
    lib.xm_pack.restype = None
    lib.xm_linear.argtypes = [size, pointer, pointer, pointer, pointer, size, pointer, size, pointer, size, size,
                              size, ctypes.c_int, ctypes.c_int, ctypes.c_int, pointer, pointer, ctypes.c_float]
    lib.xm_linear.restype = ctypes.c_int
    lib.xm_modules.argtypes = [size, pointer, pointer, pointer, pointer, pointer, pointer, size, pointer, pointer, size,
                               pointer, size, size, size, ctypes.c_int, pointer, pointer, ctypes.c_float]
    lib.xm_modules.restype = ctypes.c_int
    lib.xm_layer_norm.argtypes = [pointer, size, pointer, pointer, ctypes.c_float, pointer, size, size, size]
    lib.xm_layer_norm.restype = None
    lib.xm_attention.argtypes = [pointer, pointer, pointer, size, size, size, size, size, size, size, pointer,
                                 ctypes.c_float, pointer]
    lib.xm_attention.restype = ctypes.c_int
    lib.xm_cross_entropy.argtypes = [pointer, size, pointer, size, size, ctypes.c_float, pointer, pointer, size]
    lib.xm_cross_entropy.restype = ctypes.c_int
    lib.xm_residual_norm.argtypes = [pointer, pointer, ctypes.c_float, pointer, pointer, pointer, ctypes.c_float, size,
                                     size, pointer, pointer, pointer, pointer, pointer]
    lib.xm_residual_norm.restype = None
    lib.xm_residual_norm_backward.argtypes = [pointer, pointer, pointer, pointer, pointer, pointer, pointer,
                                              ctypes.c_float, size, size, pointer, pointer, pointer, pointer]
    lib.xm_residual_norm_backward.restype = ctypes.c_int
    lib.xm_keep_mask.argtypes = [ctypes.c_uint64, size, size, ctypes.c_int32, pointer]
    lib.xm_keep_mask.restype = ctypes.c_int
    lib.xm_mask_scale.argtypes = [pointer, pointer, ctypes.c_float, size, pointer]
    lib.xm_mask_scale.restype = None
    lib.xm_attention_train.argtypes = [pointer, pointer, pointer, size, size, size, size, size, size, size, pointer,
                                       pointer, ctypes.c_float, ctypes.c_float, pointer, pointer, pointer]
    lib.xm_attention_train.restype = ctypes.c_int
    lib.xm_attention_train_backward.argtypes = [pointer, size, size, size, pointer, pointer, pointer, size, size, size,
                                                size, size, size, size, pointer, pointer, ctypes.c_float,
                                                ctypes.c_float, pointer, pointer, pointer, pointer, pointer, size,
                                                size, size]
    lib.xm_attention_train_backward.restype = ctypes.c_int
    _vocab_argtypes(lib, pointer, size)
    _modules_train_argtypes(lib, pointer, size)
    _weight_grad_argtypes(lib, pointer, size)
    _gelu_table_argtypes(lib, pointer, size)
    for name in TWINS:  # each vector twin takes its tile kernel's arguments
        twin = getattr(lib, name + "_vector")
        twin.argtypes, twin.restype = getattr(lib, name).argtypes, ctypes.c_int
    return lib, f"built with {compiler} in {target.parent}"


def _kernel(name: str):
    """The tile kernel ``name`` (one of ``TWINS``) where ``available()``, else its vector twin where
    ``vector_available()``."""
    return getattr(_library(), name if available() or not vector_available() else name + "_vector")


def _tiles(lib: ctypes.CDLL) -> tuple[bool, str]:
    """Whether the tile kernels can run: AMX on the processor and its tile state granted by the system."""
    if not (_detected_amx_bf16() and TILES <= (cpu_flags() or frozenset())):
        return False, "this processor has no AMX bf16"
    if not lib.xm_request_amx():
        return False, "the operating system refused AMX tile state (arch_prctl)"
    return True, ""


def _library() -> ctypes.CDLL | None:
    if not _STATE["tried"]:
        _STATE["tried"] = True
        _STATE["lib"], _STATE["reason"] = _load()
        _STATE["tiles"], _STATE["tiles_reason"] = (_tiles(_STATE["lib"]) if _STATE["lib"] is not None
                                                   else (False, _STATE["reason"]))
    return _STATE["lib"]


def available() -> bool:
    """True where the tile kernels can run (the products, attention, the weight gradients, the vocabulary projection,
    the training modules): the kernels on, the processor has AMX (and ``prefer_amx_paths`` does not say otherwise),
    the library built and loaded (building it on the first call) and the tile state granted."""
    return (_STATE["enabled"] and amx_bf16() and _detected_amx_bf16() and _library() is not None
            and _STATE["tiles"])


def vector_available() -> bool:
    """True where the vector kernels can run (LayerNorm, LayerNorm(dropout(h) + residual), the cross-entropy over bf16
    logits, GELU's tables, dropout's masks and mask-and-scale; without AMX, attention's vector versions for
    inference and training and the weight gradients): the kernels on and the library built and loaded, which needs
    AVX-512 with bf16 conversions (``NEEDED``), AMX or not."""
    return _STATE["enabled"] and _library() is not None


def reason() -> str:
    """Why the tile kernels are or are not available."""
    if not _STATE["enabled"]:
        return "switched off (use_amx_kernels(False))"
    if not amx_bf16():
        return "the paths without AMX are asked for (prefer_amx_paths(False))" if _detected_amx_bf16() else \
            "this processor has no AMX bf16"
    if _library() is None:
        return _STATE["reason"]
    return _STATE["reason"] if _STATE["tiles"] else _STATE["tiles_reason"]


def vector_reason() -> str:
    """Why the vector kernels are or are not available."""
    if not _STATE["enabled"]:
        return "switched off (use_amx_kernels(False))"
    _library()
    return _STATE["reason"]


def fits(n: int, k: int) -> bool:
    """The shapes the kernel takes: outputs and inputs in whole tiles of 32."""
    return n % 32 == 0 and k % 32 == 0 and n > 0 and k > 0


def pack(weight: torch.Tensor) -> torch.Tensor:
    """A bf16 (N, K) weight in the kernel's tile layout (a flat bf16 tensor of N * K values)."""
    weight = weight.detach().to(torch.bfloat16).contiguous()
    packed = torch.empty(weight.numel(), dtype=torch.bfloat16)
    _library().xm_pack(weight.data_ptr(), packed.data_ptr(), weight.shape[0], weight.shape[1])
    return packed


def segments_linear(x: torch.Tensor, rows, weights, biases, n: int, act: str | None = None,
                    residual: torch.Tensor | None = None, split_rows: bool = False, norm=None) -> torch.Tensor:
    """``act(x_s @ W_s^T + b_s) + residual_s`` for consecutive row segments s of x (2-d bf16, rows[s] rows
    each), W_s packed (``pack``), b_s float32 or None; the result is bf16 (rows, n). One call for all.
    ``split_rows``: each thread computes all columns of its share of the rows (default: its share of the
    columns of every row). ``norm``: (weight, bias, eps) of a LayerNorm over the n outputs (bf16 weight and
    bias, or None), applied to the result: with ``split_rows`` inside the call, to each row as soon as its
    thread has written it; otherwise by ``layer_norm`` after."""
    k = x.shape[-1]
    _check_rows(x)
    if residual is not None and (residual.dtype != torch.bfloat16 or residual.stride(-1) != 1
                                 or residual.shape != (x.shape[0], n)):
        raise ValueError(f"expected a bf16 residual of shape {(x.shape[0], n)}, got {residual.dtype} "
                         f"{tuple(residual.shape)}")
    if sum(rows) != x.shape[0]:
        raise ValueError(f"segments of {list(rows)} rows for an input of {x.shape[0]} rows")
    if act not in (None, "gelu"):
        raise ValueError(f"act={act!r}; the AMX kernel applies None or 'gelu'")
    norm_weight, norm_bias, eps = _norm_pointers(norm, n)
    out = torch.empty(x.shape[0], n, dtype=torch.bfloat16)
    count = len(rows)
    rows_array = (ctypes.c_int64 * count)(*rows)
    weight_array = (ctypes.c_uint64 * count)(*(w.data_ptr() for w in weights))
    bias_array = (ctypes.c_uint64 * count)(*(0 if b is None else b.data_ptr() for b in biases))
    inside = norm is not None and split_rows
    status = _library().xm_linear(count, rows_array, weight_array, bias_array, x.data_ptr(), x.stride(0),
                                  None if residual is None else residual.data_ptr(),
                                  0 if residual is None else residual.stride(0), out.data_ptr(), n, n, k,
                                  1 if act == "gelu" else 0, int(split_rows), int(inside), norm_weight, norm_bias,
                                  eps)
    if status != 0:
        raise MemoryError("the AMX kernel could not allocate its row buffer")
    return layer_norm(out, *norm) if norm is not None and not inside else out


def modules(x: torch.Tensor, rows, first, second, residual: torch.Tensor | None = None, norm=None) -> torch.Tensor:
    """``norm(W2_s GELU(W1_s x_s + b1_s) + b2_s + residual_s)`` for consecutive row segments s of x (2-d bf16 with
    contiguous rows, rows[s] rows each): the language modules, both products in one call, each thread's rows
    going through the second product while they are in its cache. ``first``, ``second``: per segment
    (packed W, float32 bias or None) of d -> r and r -> d; ``residual``: bf16 (rows, d) or None; ``norm``: as
    in ``segments_linear`` (inside the call). The tile kernel where ``available()``: the same bits as the two
    ``segments_linear`` calls with the rows split; else the vector twin (``xm_modules_vector``, on the same packed
    weights: ``pack`` needs no AMX) where ``vector_available()``: the same bits for any thread count, not the tile
    kernel's (its sums run in another order)."""
    d = x.shape[-1]
    _check_rows(x)
    if len(first) != len(rows) or len(second) != len(rows) or sum(rows) != x.shape[0]:
        raise ValueError(f"segments of {list(rows)} rows with {len(first)} and {len(second)} weights for an input "
                         f"of {x.shape[0]} rows")
    r = first[0][0].numel() // d if first else 0
    if any(w.numel() != r * d for pair in (*first, *second) for w in pair[:1]) or not fits(r, d):
        raise ValueError(f"expected packed module weights of {d} x r values, r a multiple of 32, both products alike")
    if residual is not None and (residual.dtype != torch.bfloat16 or residual.stride(-1) != 1
                                 or residual.shape != x.shape):
        raise ValueError(f"expected a bf16 residual of shape {tuple(x.shape)}, got {residual.dtype} "
                         f"{tuple(residual.shape)}")
    norm_weight, norm_bias, eps = _norm_pointers(norm, d)
    count = len(rows)

    def pointers(pairs, i):
        return (ctypes.c_uint64 * count)(*(0 if p[i] is None else p[i].data_ptr() for p in pairs))
    inner = torch.empty(x.shape[0], r, dtype=torch.bfloat16)
    out = torch.empty(x.shape[0], d, dtype=torch.bfloat16)
    status = _kernel("xm_modules")(count, (ctypes.c_int64 * count)(*rows), pointers(first, 0), pointers(first, 1),
                    pointers(second, 0), pointers(second, 1), x.data_ptr(), x.stride(0), inner.data_ptr(),
                    None if residual is None else residual.data_ptr(), 0 if residual is None else residual.stride(0),
                    out.data_ptr(), d, d, r, int(norm is not None), norm_weight, norm_bias, eps)
    if status != 0:
        raise MemoryError("the AMX kernel could not allocate its row buffer")
    return out


def _check_rows(x: torch.Tensor) -> None:
    if x.dtype != torch.bfloat16 or x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"expected a 2-d bf16 input with contiguous rows, got {x.dtype} {tuple(x.shape)}")


def _norm_pointers(norm, d: int) -> tuple:
    """(weight address or None, bias address or None, eps) of a LayerNorm's (weight, bias, eps) over d values,
    checked; (None, None, 0.0) for no norm."""
    if norm is None:
        return None, None, 0.0
    weight, bias, eps = norm
    _check_norm(weight, bias, d)
    return (None if weight is None else weight.data_ptr()), (None if bias is None else bias.data_ptr()), eps


def _check_norm(weight: torch.Tensor | None, bias: torch.Tensor | None, d: int) -> None:
    if d % 16:
        raise ValueError(f"LayerNorm over {d} values; the kernel takes a multiple of 16")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != torch.bfloat16 or t.shape != (d,) or not t.is_contiguous()):
            raise ValueError(f"expected a contiguous bf16 {name} of shape ({d},), got {t.dtype} {tuple(t.shape)}")


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """LayerNorm over the last dimension of a bf16 tensor with contiguous rows, bf16 weight and bias (or None):
    torch's computation (float32 statistics, one rounding), in one pass per row on all threads."""
    d = x.shape[-1]
    rows = x.reshape(-1, d)
    if x.dtype != torch.bfloat16 or rows.stride(-1) != 1 or d % 16:
        raise ValueError(f"expected bf16 rows of a multiple of 16 values, got {x.dtype} {tuple(x.shape)}")
    _check_norm(weight, bias, d)
    out = torch.empty(rows.shape, dtype=torch.bfloat16)
    _library().xm_layer_norm(rows.data_ptr(), rows.stride(0), None if weight is None else weight.data_ptr(),
                             None if bias is None else bias.data_ptr(), eps, out.data_ptr(), d, rows.shape[0], d)
    return out.view(x.shape)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D), keys kept) @ v`` for bf16 (B, H, T, D) views that share their strides (the
    heads of one fused projection, read in place), D % 32 == 0; ``keep`` (B, T) bool or None. The result is a
    (B, H, T, D) view of (B, T, H, D) memory: laid back as (B, T, H * D) without a copy. The tile kernel where
    ``available()``, else the vector kernel (``xm_attention_vector``, the same computation) where
    ``vector_available()``."""
    batch, heads, t, d = q.shape
    if not (q.dtype == k.dtype == v.dtype == torch.bfloat16 and q.shape == k.shape == v.shape
            and q.stride() == k.stride() == v.stride() and q.stride(-1) == 1 and d % 32 == 0):
        raise ValueError(f"expected bf16 q, k, v of one shape and strides, the last of them 1 and of a multiple "
                         f"of 32 values, got {q.dtype} {tuple(q.shape)} {q.stride()}, {k.dtype} {tuple(k.shape)} "
                         f"{k.stride()}, {v.dtype} {tuple(v.shape)} {v.stride()}")
    if keep is not None:
        if keep.shape != (batch, t) or keep.dtype != torch.bool:
            raise ValueError(f"expected a bool keep mask of shape {(batch, t)}, got {keep.dtype} {tuple(keep.shape)}")
        keep = keep.contiguous()
    out = torch.empty(batch, t, heads, d, dtype=torch.bfloat16)
    status = _kernel("xm_attention")(q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), q.stride(1), q.stride(2),
                                     batch, heads, t, d, None if keep is None else keep.data_ptr(), d ** -0.5,
                                     out.data_ptr())
    if status != 0:
        raise MemoryError("the attention kernel could not allocate its scratch")
    return out.permute(0, 2, 1, 3)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 loss per row, bf16 gradient of ``scale`` times their sum) of 2-d bf16 logits with contiguous rows
    against int64 targets in [0, V): the softmax in float32, the gradient rounded once."""
    _check_rows(logits)
    rows, v = logits.shape
    targets = targets.to(torch.int64).contiguous()
    if targets.shape != (rows,) or (rows and not bool(((targets >= 0) & (targets < v)).all())):
        raise ValueError(f"expected {rows} targets in [0, {v}), got shape {tuple(targets.shape)}")
    losses = torch.empty(rows, dtype=torch.float32)
    grad = torch.empty(rows, v, dtype=torch.bfloat16)
    status = _library().xm_cross_entropy(logits.data_ptr(), logits.stride(0), targets.data_ptr(), rows, v, scale,
                                         losses.data_ptr(), grad.data_ptr(), v)
    if status != 0:
        raise MemoryError("the cross-entropy kernel could not allocate its row buffer")
    return losses, grad


def _address(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def residual_norm(h: torch.Tensor, keep: torch.Tensor | None, scale: float, residual: torch.Tensor,
                  weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, twin: bool = False) -> tuple:
    """``LayerNorm(dropout(h) + residual)`` over the last dimension (d, a multiple of 16): h bf16, ``keep`` the
    dropout's uint8 keep mask (or None: no dropout) with its ``scale``, the residual, weight and bias float32, all
    contiguous. Returns (y, t, mean, rstd, y16): the output, the sum and the row statistics (float32) the backward
    reads, and with ``twin`` the output rounded to bf16 in the same pass (else None)."""
    d = h.shape[-1]
    if not (h.dtype == torch.bfloat16 and residual.dtype == torch.float32 and residual.shape == h.shape
            and d % 16 == 0 and h.is_contiguous() and residual.is_contiguous()):
        raise ValueError(f"expected contiguous bf16 h and float32 residual of one shape, the last dimension a multiple "
                         f"of 16, got {h.dtype} {tuple(h.shape)}, {residual.dtype} {tuple(residual.shape)}")
    if keep is not None and (keep.dtype != torch.uint8 or keep.shape != h.shape or not keep.is_contiguous()):
        raise ValueError(f"expected a contiguous uint8 keep mask of shape {tuple(h.shape)}, got {keep.dtype} "
                         f"{tuple(keep.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.dtype != torch.float32 or p.shape != (d,) or not p.is_contiguous()):
            raise ValueError(f"expected a contiguous float32 {name} of shape ({d},), got {p.dtype} {tuple(p.shape)}")
    rows = h.numel() // d
    t, y = torch.empty_like(residual), torch.empty_like(residual)
    y16 = torch.empty(h.shape, dtype=torch.bfloat16) if twin else None
    mean, rstd = torch.empty(rows), torch.empty(rows)
    _library().xm_residual_norm(h.data_ptr(), _address(keep), scale, residual.data_ptr(), _address(weight),
                                _address(bias), eps, rows, d, t.data_ptr(), y.data_ptr(), _address(y16),
                                mean.data_ptr(), rstd.data_ptr())
    return y, t, mean, rstd, y16


def residual_norm_backward(dy: torch.Tensor | None, t: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                           weight: torch.Tensor | None, keep: torch.Tensor | None, scale: float,
                           dy16: torch.Tensor | None = None) -> tuple:
    """The gradients of ``residual_norm`` for the output's ``dy`` plus its bf16 copy's ``dy16`` (either None: no
    gradient): (the residual's, float32; h's, bf16; the weight's and the bias's, float32, or None without
    weight)."""
    d = t.shape[-1]
    dy = torch.zeros_like(t) if dy is None else dy.to(torch.float32).contiguous()
    if dy16 is not None:
        dy16 = dy16.to(torch.bfloat16).contiguous()
        if dy16.shape != t.shape:
            raise ValueError(f"expected the bf16 copy's gradient of shape {tuple(t.shape)}, got {tuple(dy16.shape)}")
    rows = t.numel() // d
    dt, dh = torch.empty_like(t), torch.empty(t.shape, dtype=torch.bfloat16)
    dweight, dbias = (torch.empty(d), torch.empty(d)) if weight is not None else (None, None)
    status = _library().xm_residual_norm_backward(dy.data_ptr(), _address(dy16), t.data_ptr(), mean.data_ptr(),
                                                  rstd.data_ptr(), _address(weight), _address(keep), scale, rows, d,
                                                  dt.data_ptr(), dh.data_ptr(), _address(dweight), _address(dbias))
    if status != 0:
        raise MemoryError("the residual-norm backward could not allocate its partial sums")
    return dt, dh, dweight, dbias


def keep_mask(seed: int, n: int, chunk: int, threshold: int) -> torch.Tensor:
    """Dropout's uint8 keep mask of n draws from numpy's SFC64 streams, one per chunk of ``chunk`` draws started
    from three words each of ``SeedSequence(seed).generate_state`` (hashed in C, as numpy hashes them): what
    ``kernels.dropout`` computes with numpy, 8 chunks at a time in vector lanes (the rest one by one), on all
    threads. ``seed`` below 2**64."""
    if not 0 <= seed < 1 << 64 or chunk <= 0 or chunk % 4 or not -32768 <= threshold <= 32768:
        raise ValueError(f"expected a seed in [0, 2**64), chunks of a positive multiple of 4 draws and a threshold "
                         f"in [-32768, 32768], got {seed}, {chunk}, {threshold}")
    keep = torch.empty(n, dtype=torch.uint8)
    if _library().xm_keep_mask(seed, n, chunk, threshold, keep.data_ptr()):
        raise MemoryError(f"no memory for the words of {-(-n // chunk)} streams")
    return keep


def mask_scale(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``torch.addcmul(0, x, keep.to(x.dtype), value=scale)`` for contiguous float32 ``x`` and a contiguous uint8
    ``keep`` of its shape, the mask read as bytes (the same bits: see xm_mask_scale)."""
    if not (x.dtype == torch.float32 and keep.dtype == torch.uint8 and keep.shape == x.shape and x.is_contiguous()
            and keep.is_contiguous()):
        raise ValueError(f"expected contiguous float32 x and a uint8 keep mask of its shape, got {x.dtype} "
                         f"{tuple(x.shape)}, {keep.dtype} {tuple(keep.shape)}")
    out = torch.empty_like(x)
    _library().xm_mask_scale(x.data_ptr(), keep.data_ptr(), scale, x.numel(), out.data_ptr())
    return out


def _check_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q, k, v bf16 (B, H, T, D) of one shape and strides, the last stride 1, D a multiple of 32."""
    if not (q.dim() == 4 and q.dtype == k.dtype == v.dtype == torch.bfloat16 and q.shape == k.shape == v.shape
            and q.stride() == k.stride() == v.stride() and q.stride(-1) == 1 and q.shape[-1] % 32 == 0
            and q.shape[2] > 0):
        raise ValueError(f"expected bf16 (B, H, T, D) q, k, v of one shape and strides, the last of them 1, D a "
                         f"multiple of 32, T > 0, got {q.dtype} {tuple(q.shape)} {q.stride()}, {k.dtype} "
                         f"{tuple(k.shape)} {k.stride()}, {v.dtype} {tuple(v.shape)} {v.stride()}")


def _check_training_masks(shape, keys: torch.Tensor | None, keep: torch.Tensor | None) -> None:
    batch, heads, t, _ = shape
    if keys is not None and (keys.dtype != torch.bool or keys.shape != (batch, t) or not keys.is_contiguous()):
        raise ValueError(f"expected a contiguous bool key mask of shape {(batch, t)}, got {keys.dtype} "
                         f"{tuple(keys.shape)}")
    if keep is not None and (keep.dtype != torch.uint8 or keep.shape != (batch, heads, t, t)
                             or not keep.is_contiguous()):
        raise ValueError(f"expected a contiguous uint8 keep mask of shape {(batch, heads, t, t)}, got {keep.dtype} "
                         f"{tuple(keep.shape)}")


def training_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor | None,
                       keep: torch.Tensor | None, drop_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward of softmax attention in training: ``round_bf16(P keep drop_scale) @ v``, P the float32 softmax of
    q k^T / sqrt(D) over the keys ``keys`` keeps ((B, T) bool, or None: all). q, k, v as ``attention`` takes them;
    ``keep``: the dropout's contiguous uint8 (B, H, T, T) mask, or None (no dropout). Returns the output, a
    (B, H, T, D) view of (B, T, H, D) memory, and the rows' softmax constants (2, B, H, T) float32 that
    ``training_attention_backward`` reads."""
    _check_heads(q, k, v)
    _check_training_masks(q.shape, keys, keep)
    batch, heads, t, d = q.shape
    out = torch.empty(batch, t, heads, d, dtype=torch.bfloat16)
    stats = torch.empty(2, batch, heads, t)
    kernel = _kernel("xm_attention_train")
    status = kernel(q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), q.stride(1), q.stride(2), batch, heads, t,
                    d, _address(keys), _address(keep), drop_scale, d ** -0.5, out.data_ptr(), stats[0].data_ptr(),
                    stats[1].data_ptr())
    if status != 0:
        raise MemoryError("the training attention kernel could not allocate its scratch")
    return out.permute(0, 2, 1, 3), stats


def training_attention_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                keys: torch.Tensor | None, keep: torch.Tensor | None, drop_scale: float,
                                stats: torch.Tensor) -> torch.Tensor:
    """The gradients of ``training_attention`` for the output's ``dout`` (bf16 (B, H, T, D), last stride 1): one bf16
    (B, T, 3, H, D) tensor holding dq, dk, dv at [:, :, 0], [:, :, 1], [:, :, 2] (the layout of a fused QKV
    projection's output)."""
    _check_heads(q, k, v)
    _check_training_masks(q.shape, keys, keep)
    batch, heads, t, d = q.shape
    if dout.dtype != torch.bfloat16 or dout.shape != q.shape or dout.stride(-1) != 1:
        raise ValueError(f"expected a bf16 output gradient of shape {tuple(q.shape)} with last stride 1, got "
                         f"{dout.dtype} {tuple(dout.shape)} {dout.stride()}")
    if stats.dtype != torch.float32 or stats.shape != (2, batch, heads, t) or not stats.is_contiguous():
        raise ValueError(f"expected contiguous float32 row constants of shape {(2, batch, heads, t)}, got "
                         f"{stats.dtype} {tuple(stats.shape)}")
    grads = torch.empty(batch, t, 3, heads, d, dtype=torch.bfloat16)
    dq, dk, dv = (grads[:, :, i].transpose(1, 2) for i in range(3))
    kernel = _kernel("xm_attention_train_backward")
    status = kernel(
        dout.data_ptr(), dout.stride(0), dout.stride(1), dout.stride(2), q.data_ptr(), k.data_ptr(), v.data_ptr(),
        q.stride(0), q.stride(1), q.stride(2), batch, heads, t, d, _address(keys), _address(keep), drop_scale,
        d ** -0.5, stats[0].data_ptr(), stats[1].data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
        dq.stride(0), dq.stride(1), dq.stride(2))
    if status != 0:
        raise MemoryError("the training attention backward could not allocate its scratch")
    return grads


# The vocabulary projection in bf16 autocast training (native.c's last section): the float32 weight read
# directly, rounded to bf16 as it is packed; dW and db in float32. The forward can also write the rounded weight
# in the layout the backward's dX product reads (``pairs``), which the backward then reads instead of the weight.

def _vocab_argtypes(lib, pointer, size) -> None:
    lib.xm_vocab_forward.argtypes = [pointer, pointer, pointer, size, size, size, pointer, pointer, pointer, pointer]
    lib.xm_vocab_forward.restype = ctypes.c_int
    lib.xm_vocab_backward.argtypes = [pointer, pointer, pointer, size, size, size, pointer, pointer, pointer, pointer,
                                      pointer, pointer, ctypes.c_float, pointer]
    lib.xm_vocab_backward.restype = ctypes.c_int


def vocab_fits(v: int, d: int) -> bool:
    """The shapes the vocabulary kernels take: v and d multiples of 32."""
    return v > 0 and d > 0 and v % 32 == 0 and d % 32 == 0


def _check_vocab(x: torch.Tensor, weight: torch.Tensor) -> None:
    if weight.dtype != torch.float32 or weight.dim() != 2 or not weight.is_contiguous() \
            or not vocab_fits(*weight.shape):
        raise ValueError(f"expected a contiguous float32 (V, D) weight, V and D multiples of 32, got {weight.dtype} "
                         f"{tuple(weight.shape)}")
    if x.dtype != torch.bfloat16 or x.dim() != 2 or not x.is_contiguous() or x.shape[1] != weight.shape[1]:
        raise ValueError(f"expected contiguous bf16 rows of {weight.shape[1]} values, got {x.dtype} {tuple(x.shape)}")


def vocab_pairs(weight: torch.Tensor) -> torch.Tensor:
    """An empty buffer for ``vocab_forward``'s ``pairs`` (V * D bf16 values as int16, 64-byte aligned: the forward
    writes it with non-temporal stores)."""
    pairs = torch.empty(weight.numel(), dtype=torch.int16)
    if pairs.data_ptr() % 64:
        raise RuntimeError("the allocator gave a buffer not aligned to 64 bytes")
    return pairs


def vocab_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, statistics: bool = False,
                  pairs: torch.Tensor | None = None):
    """bf16 (N, V) logits = round_bf16(x @ round_bf16(weight)^T + round_bf16(bias)), float32 sums rounded once:
    x contiguous bf16 (N, D), weight contiguous float32 (V, D), bias float32 (V,) or None. With ``statistics``,
    (logits, row_max, row_total): each row's max of its bf16 logits and sum of exp(logit - max), float32 (N,).
    ``pairs`` (``vocab_pairs(weight)``, or None): filled with round_bf16(weight) as ``vocab_backward`` reads it."""
    _check_vocab(x, weight)
    v, d = weight.shape
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (v,) or not bias.is_contiguous()):
        raise ValueError(f"expected a contiguous float32 bias of shape ({v},), got {bias.dtype} {tuple(bias.shape)}")
    n = x.shape[0]
    out = torch.empty(n, v, dtype=torch.bfloat16)
    row_max, row_total = (torch.empty(n, dtype=torch.float32) for _ in range(2)) if statistics else (None, None)
    if pairs is not None and (pairs.dtype != torch.int16 or pairs.numel() != v * d or pairs.data_ptr() % 64):
        raise ValueError("expected pairs from vocab_pairs(weight)")
    if n and _library().xm_vocab_forward(x.data_ptr(), weight.data_ptr(), _address(bias), n, v, d, out.data_ptr(),
                                         _address(row_max), _address(row_total), _address(pairs)) != 0:
        raise MemoryError("the vocabulary projection could not allocate its scratch")
    return (out, row_max, row_total) if statistics else out


def vocab_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, input_grad: bool = True,
                   weight_grad: bool = True, bias_grad: bool = True, loss: tuple | None = None,
                   pairs: torch.Tensor | None = None) -> tuple:
    """The gradients of ``vocab_forward`` for the bf16 (N, V) ``grad``: dX bf16 (N, D) = round_bf16(grad @
    round_bf16(weight)), dW float32 (V, D) = grad^T @ x and db float32 (V,) = grad's column sums, summed in float32
    and not rounded (None where not asked for). With ``loss`` = (targets, row_max, row_total, scale), ``grad`` is
    the logits and the gradient taken is the mean cross-entropy's (scale 1 / N), formed from them as
    ``cross_entropy`` forms it, with ``vocab_forward``'s statistics for the max and the sum. ``pairs``: the buffer
    ``vocab_forward`` filled from this weight, read for dX instead of the weight (the same bits), or None."""
    _check_vocab(x, weight)
    (n, d), v = x.shape, weight.shape[0]
    if grad.dtype != torch.bfloat16 or grad.shape != (n, v) or not grad.is_contiguous():
        raise ValueError(f"expected a contiguous bf16 gradient of shape {(n, v)}, got {grad.dtype} {tuple(grad.shape)}")
    targets, row_max, row_total, scale = loss if loss is not None else (None, None, None, 0.0)
    if loss is not None:
        targets = targets.to(torch.int64).contiguous()
        if targets.shape != (n,) or row_max.shape != (n,) or row_total.shape != (n,) or \
                row_max.dtype != torch.float32 or row_total.dtype != torch.float32 or \
                (n and not bool(((targets >= 0) & (targets < v)).all())):
            raise ValueError(f"expected {n} targets in [0, {v}) and float32 row statistics of shape ({n},)")
    if pairs is not None and (pairs.dtype != torch.int16 or pairs.numel() != v * d or pairs.data_ptr() % 64):
        raise ValueError("expected pairs from vocab_pairs(weight), filled by vocab_forward")
    dx = torch.empty(n, d, dtype=torch.bfloat16) if input_grad else None
    dw = torch.empty(v, d, dtype=torch.float32) if weight_grad else None
    db = torch.empty(v, dtype=torch.float32) if bias_grad else None
    if not n:
        return dx, None if dw is None else dw.zero_(), None if db is None else db.zero_()
    if (input_grad or weight_grad or bias_grad) and _library().xm_vocab_backward(
            grad.data_ptr(), x.data_ptr(), weight.data_ptr(), n, v, d, _address(dx), _address(dw), _address(db),
            _address(targets), _address(row_max), _address(row_total), scale, _address(pairs)) != 0:
        raise MemoryError("the vocabulary projection's backward could not allocate its scratch")
    return dx, dw, db


# The language modules in bf16 autocast training (native.c's section after the vocabulary projection): the float32
# weights rounded to bf16 as they are packed, whole segments per thread; weight and bias gradients float32.

def _modules_train_argtypes(lib, pointer, size) -> None:
    lib.xm_modules_train.argtypes = [size, pointer, pointer, pointer, pointer, pointer, pointer, size, size, pointer,
                                     pointer, pointer, pointer]
    lib.xm_modules_train.restype = ctypes.c_int
    lib.xm_modules_train_backward.argtypes = [size, pointer, pointer, pointer, pointer, pointer, pointer, size, size,
                                              pointer, pointer, pointer, pointer, pointer]
    lib.xm_modules_train_backward.restype = ctypes.c_int


def _addresses(tensors) -> ctypes.Array:
    return (ctypes.c_uint64 * len(tensors))(*(t.data_ptr() for t in tensors))


def _block_addresses(t: torch.Tensor) -> ctypes.Array:
    """The addresses of t[0], t[1], ... (what _addresses(t.unbind()) gives, without making the views)."""
    start, step = t.data_ptr(), t.stride(0) * t.element_size()
    return (ctypes.c_uint64 * t.shape[0])(*range(start, start + t.shape[0] * step, step))


def modules_train(x: torch.Tensor, rows, w1s, b1s, w2s, b2s) -> tuple:
    """The language modules' forward in training for consecutive row segments s of x (2-d contiguous bf16, rows[s]
    rows each): H = x W1_s^T + b1_s, G = gelu_erf(H), y = G W2_s^T + b2_s, float32 sums, the float32 weights (W1_s
    (r, d), W2_s (d, r), r and d multiples of 32; biases float32) rounded to bf16 in the kernel. Returns (y, S, G,
    pairs): y bf16 (rows, d), and for ``modules_train_backward`` S = GELU's derivative at H and G (bf16 (rows, r))
    and the weights rounded to bf16 in the backward's layout (bf16 (segments, 2, r d))."""
    d = x.shape[-1]
    r = w1s[0].shape[0] if len(w1s) else 0
    _check_rows(x)
    if not x.is_contiguous() or len(w1s) != len(rows) or len(w2s) != len(rows) or sum(rows) != x.shape[0] \
            or min(rows, default=0) < 0 or not fits(r, d):
        raise ValueError(f"segments of {list(rows)} rows with {len(w1s)} and {len(w2s)} weights for a contiguous "
                         f"input of {tuple(x.shape)}, d and r multiples of 32")
    for tensors, shape in ((w1s, (r, d)), (w2s, (d, r)), (b1s, (r,)), (b2s, (d,))):
        for t in tensors:  # torch.Size compares with a tuple as it is (no tuple() per tensor: this runs per layer)
            if t.dtype != torch.float32 or t.shape != shape or not t.is_contiguous():
                raise ValueError(f"expected contiguous float32 module weights and biases of shape {shape}, got "
                                 f"{t.dtype} {tuple(t.shape)}")
    n, count = x.shape[0], len(rows)
    slope, g = torch.empty(n, r, dtype=torch.bfloat16), torch.empty(n, r, dtype=torch.bfloat16)
    y = torch.empty(n, d, dtype=torch.bfloat16)
    pairs = torch.empty(count, 2, r * d, dtype=torch.bfloat16)
    if n and _library().xm_modules_train(count, (ctypes.c_int64 * count)(*rows), _addresses(w1s), _addresses(b1s),
                                         _addresses(w2s), _addresses(b2s), x.data_ptr(), d, r, slope.data_ptr(),
                                         g.data_ptr(), y.data_ptr(), pairs.data_ptr()) != 0:
        raise MemoryError("the modules' training kernel could not allocate its scratch")
    return y, slope, g, pairs


def modules_train_backward(dy: torch.Tensor, x: torch.Tensor, slope: torch.Tensor, g: torch.Tensor,
                           pairs: torch.Tensor, rows) -> tuple:
    """The gradients of ``modules_train`` for the bf16 (rows, d) ``dy``, from its S (``slope``), G and ``pairs``:
    dH = round_bf16((dy W2) S); (dx bf16 (rows, d), dW1 (n, r, d), db1 (n, r), dW2 (n, d, r), db2 (n, d)), n the
    segment count, the weights' and biases' float32, summed in float32 and not rounded."""
    _check_rows(x)
    (n, d), r, count = x.shape, slope.shape[-1], len(rows)
    if not x.is_contiguous() or sum(rows) != n or min(rows, default=0) < 0 or not fits(r, d):
        raise ValueError(f"segments of {list(rows)} rows for a contiguous input of {tuple(x.shape)}")
    for name, t, shape in (("dy", dy, (n, d)), ("slope", slope, (n, r)), ("g", g, (n, r)),
                           ("pairs", pairs, (count, 2, r * d))):
        if t.dtype != torch.bfloat16 or tuple(t.shape) != shape or not t.is_contiguous():
            raise ValueError(f"expected contiguous bf16 {name} of shape {shape}, got {t.dtype} {tuple(t.shape)}")
    dx = torch.empty(n, d, dtype=torch.bfloat16)
    dw1, db1 = torch.empty(count, r, d), torch.empty(count, r)
    dw2, db2 = torch.empty(count, d, r), torch.empty(count, d)
    if not n:
        return dx, dw1.zero_(), db1.zero_(), dw2.zero_(), db2.zero_()
    if _library().xm_modules_train_backward(count, (ctypes.c_int64 * count)(*rows), pairs.data_ptr(), x.data_ptr(),
                                            slope.data_ptr(), g.data_ptr(), dy.data_ptr(), d, r, dx.data_ptr(),
                                            _block_addresses(dw1), _block_addresses(db1), _block_addresses(dw2),
                                            _block_addresses(db2)) != 0:
        raise MemoryError("the modules' training backward could not allocate its scratch")
    return dx, dw1, db1, dw2, db2


# A linear's weight and bias gradients in bf16 autocast training (native.c's xm_weight_grad): float32, not rounded.

def _weight_grad_argtypes(lib, pointer, size) -> None:
    lib.xm_weight_grad.argtypes = [pointer, size, pointer, size, size, size, size, pointer, pointer]
    lib.xm_weight_grad.restype = ctypes.c_int


def weight_grad(grad: torch.Tensor, x: torch.Tensor, bias_grad: bool = True) -> tuple:
    """(dW float32 (N, K) = grad^T @ x, db float32 (N,) = grad's column sums, or None) of a linear from the bf16
    (T, N) output gradient and bf16 (T, K) input (both with contiguous rows; N and K multiples of 32), summed in
    float32 over T and not rounded (more precise than autocast's product and sum, which round both to bf16): the
    same bits for any thread count. The tile kernel where ``available()``, else the vector kernel
    (``xm_weight_grad_vector``, AVX-512 bf16 products; ``vector_available()``), whose sums run in another order:
    the two agree to float32 summation error, not bit for bit."""
    _check_rows(grad)
    _check_rows(x)
    (t, n), k = grad.shape, x.shape[1]
    if x.shape[0] != t or not fits(n, k):
        raise ValueError(f"expected a gradient (T, N) and an input (T, K) with N and K multiples of 32, got "
                         f"{tuple(grad.shape)} and {tuple(x.shape)}")
    dw = torch.empty(n, k, dtype=torch.float32)
    db = torch.empty(n, dtype=torch.float32) if bias_grad else None
    if not t:
        return dw.zero_(), None if db is None else db.zero_()
    if _kernel("xm_weight_grad")(grad.data_ptr(), grad.stride(0), x.data_ptr(), x.stride(0), t, n, k, dw.data_ptr(),
                                 _address(db)) != 0:
        raise MemoryError("the weight-gradient kernel could not allocate its scratch")
    return dw, db


# GELU and its backward on bf16 values through tables of every bf16 value (native.c's xm_gelu_table*).

def _gelu_table_argtypes(lib, pointer, size) -> None:
    lib.xm_gelu_table.argtypes = [pointer, size, pointer, pointer]
    lib.xm_gelu_table.restype = None
    lib.xm_gelu_table_backward.argtypes = [pointer, pointer, size, pointer, pointer]
    lib.xm_gelu_table_backward.restype = None


_TABLES: dict = {}


def _every_bf16() -> torch.Tensor:
    """Every bf16 value, in float64, indexed by its 16 bits."""
    return torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).double()


def _flushed(table: torch.Tensor) -> torch.Tensor:
    """The table's float32 denormals (GELU's and its slope's far negative tail, below 2^-126) as zeros of their sign:
    the kernel runs with denormals flushed, as every own kernel."""
    return torch.where(table.abs() < 2.0 ** -126, table * 0, table).contiguous()


def gelu_values() -> torch.Tensor:
    """Erf GELU of every bf16 value x, indexed by x's bits: float64 rounded once to bf16, held in float32 (256 KB,
    made once); +inf at +inf, 0 at -inf, NaN at NaN; below 2^-126 in magnitude, zero."""
    if "values" not in _TABLES:
        x = _every_bf16()
        value = torch.where(x.isinf(), x.clamp(min=0), 0.5 * x * torch.special.erfc(-x / 2 ** 0.5))
        _TABLES["values"] = _flushed(value.bfloat16().float())
    return _TABLES["values"]


def gelu_slopes() -> torch.Tensor:
    """Erf GELU's derivative Phi(x) + x phi(x) of every bf16 value x, indexed by x's bits: float64 rounded once to
    float32 (256 KB, made once); 1 at +inf, 0 at -inf, NaN at NaN; below 2^-126 in magnitude, zero."""
    if "slopes" not in _TABLES:
        x = _every_bf16()
        slope = 0.5 * torch.special.erfc(-x / 2 ** 0.5) + x * torch.exp(-x * x / 2) / (2 * torch.pi) ** 0.5
        _TABLES["slopes"] = _flushed(torch.where(x.isinf(), (x > 0).double(), slope).float())
    return _TABLES["slopes"]


def _check_gelu(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if t.dtype != torch.bfloat16 or not t.is_contiguous() or (like is not None and t.shape != like.shape):
        want = f" of shape {tuple(like.shape)}" if like is not None else ""
        raise ValueError(f"expected a contiguous bf16 {name}{want}, got {t.dtype} {tuple(t.shape)}"
                         + ("" if t.is_contiguous() else " (not contiguous)"))


def gelu_table(h: torch.Tensor) -> torch.Tensor:
    """Erf GELU of the contiguous bf16 ``h``, correctly rounded to bf16 (``gelu_values``), same shape."""
    _check_gelu("input", h)
    out = torch.empty_like(h)
    _library().xm_gelu_table(h.data_ptr(), h.numel(), gelu_values().data_ptr(), out.data_ptr())
    return out


def gelu_table_backward(dg: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """GELU's input gradient round_bf16(dg * gelu'(h)) for contiguous bf16 ``dg`` and ``h`` of one shape, gelu'(h)
    float64's rounded to float32 (``gelu_slopes``)."""
    _check_gelu("input", h)
    _check_gelu("gradient", dg, h)
    dh = torch.empty_like(h)
    _library().xm_gelu_table_backward(dg.data_ptr(), h.data_ptr(), h.numel(), gelu_slopes().data_ptr(), dh.data_ptr())
    return dh
