"""Process-level CPU tuning the ``xmodlm`` command applies at start (library users may call it too).

glibc's malloc returns large freed blocks to the OS and maps them again on the next allocation, so
a forward pass that allocates tens of MB of activations pays page faults on every call. Measured on
the project's 2-core machine: a base-shape bf16 encoder forward (8 x 128) took 0.32 s per call by
default against 0.27 s with freed memory kept for reuse; the small-config MLM training step 318 ms
against 288 ms in fp32 once tensors up to 512 MiB (its 32k x 256 gradients) come from the heap too,
for 2% more peak memory. The reference implementation gains as well. This is the allocator advice
of PyTorch's CPU performance guide, done with glibc's own knobs instead of preloading jemalloc or
tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Literal

from .files import atomic_write_text

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def tune_allocator(mmap_threshold: int = 512 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Serve allocations below ``mmap_threshold`` from the heap and keep up to ``trim_threshold`` bytes of
    freed heap for reuse (glibc's defaults adapt between 128 KiB and 32 MiB and trim eagerly).
    Returns False where this is not glibc (nothing changed)."""
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 < value < 2**31:
            raise ValueError(f"{name}={value}: expected a byte count between 1 and 2**31 - 1")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(requested: int = 0, cores: int | None = None, load: float | None = None) -> tuple[int, str]:
    """(torch threads, why): ``requested`` when > 0, else one per core left idle by the machine's other work.

    Measured on the project's 2-core machine (60 pre-training steps of a tiny model, 32 x 64 tokens; width 64 and
    256): with any other work on the machine, a second thread made training several times slower (threads wait for
    each other at every operator), and even with the other core idle it gained little at these sizes. So the rule is
    the cores minus the 1-minute load average (rounded up: a half-busy core counts as busy), at least one."""
    if requested < 0:
        raise ValueError(f"--threads {requested}: expected a number of threads, or 0 to choose from cores and load")
    cores = usable_cores() if cores is None else cores
    if requested:
        return requested, f"--threads {requested}"
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows): assume the machine is ours
            load = 0.0
    n = max(1, min(cores, cores - math.ceil(load - 0.25)))
    return n, f"{cores} cores, load {load:.1f} over the last minute; --threads N to choose"


def set_threads(requested: int = 0, quiet: bool = False) -> int:
    """Apply ``choose_threads(requested)`` to torch, say so on stderr (unless quiet), return the count."""
    import torch

    n, why = choose_threads(requested)
    torch.set_num_threads(n)
    if not quiet:
        print(f"xmodlm: {n} CPU thread{'s' if n > 1 else ''} ({why})", file=sys.stderr, flush=True)
    return n


def _cpu_fields() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (it describes them all), as field -> value; {} without it."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def _cpu_name(fields: dict[str, str]) -> str:
    import platform

    return fields.get("model name") or platform.processor() or platform.machine()


def machine_info() -> dict:
    """What a result depends on: CPU model, cores, torch version and threads, GPU if any (for trainer_state.json
    and reports)."""
    import platform

    import torch

    info = {"cpu": _cpu_name(_cpu_fields()), "cores": usable_cores(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---- the kernels' timed choices, kept per machine ----------------------------------------------------------------
CHOICE_CACHE_ENV = "XMODLM_KERNEL_CACHE"
_CACHE_FORMAT = "xmodlm kernel choices 1"
_OFF = ("", "0", "off", "false", "no", "none")


def choice_cache_path() -> Path | None:
    """Where the kernels' timed choices are kept: $XMODLM_KERNEL_CACHE (a file; "off" or "0": nowhere), else
    $XDG_CACHE_HOME/xmodlm/kernel-choices.json, else ~/.cache/xmodlm/kernel-choices.json."""
    value = os.environ.get(CHOICE_CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xmodlm" / "kernel-choices.json"


def machine_fingerprint() -> str:
    """What the kernels' relative speeds depend on besides a product's shape and the thread count (both in each
    choice's key): the processor (vendor, family, model, name, a digest of its instruction-set flags), torch's
    version (its oneDNN and BLAS come with it) and xmodlm's."""
    from importlib import metadata

    import torch

    try:
        version = metadata.version("xmodlm")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        version = "not installed"
    fields = _cpu_fields()
    flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()[:12]
    cpu = (f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model {fields.get('model', '?')} "
           f"({_cpu_name(fields)}), flags {flags}")
    return f"{cpu}; torch {torch.__version__}; xmodlm {version}"


def _encode(key):
    return [_encode(k) for k in key] if isinstance(key, tuple) else key


def _decode(key):
    """A key as ``tune`` makes it: names, whole numbers, flags and None (an inference linear's activation), and
    tuples of them (the candidates on offer)."""
    if isinstance(key, list):
        return tuple(_decode(k) for k in key)
    if key is not None and not isinstance(key, (bool, int, str)):
        raise ValueError(f"a key part {key!r} is not a name, a whole number, a flag or null")
    return key


def _read_cache(path: Path) -> dict[str, list]:
    """The file's machines -> [[key, name], ...]; {} where there is no file; ValueError where it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT or not isinstance(data.get("machines"), dict):
        raise ValueError(f"not a kernel-choice file (expected format {_CACHE_FORMAT!r})")
    return data["machines"]


def _choices_of(entries) -> dict[tuple, str]:
    if not isinstance(entries, list) or not all(isinstance(e, list) and len(e) == 2 for e in entries):
        raise ValueError("a machine's entries are not [key, name] pairs")
    return {_decode(key): name for key, name in entries}


def use_choice_cache(path: str | os.PathLike | None | Literal[False] = None) -> int:
    """Keep the kernels' timed choices (``kernels.tune``: which of two equivalent formulations of a product ran
    faster here) in a file per machine, and take back the ones an earlier process made on this machine: its runs then
    time each shape once, not once per process, and separate runs with the same seed make the same choices, so give
    the same bits. ``path``: the file (None: ``choice_cache_path()``; False: stop keeping them). Returns how many
    choices were taken back. The ``xmodlm`` command calls it for every subcommand.

    A file that is not one (damaged, or another program's) is reported as a warning and replaced at the next
    choice: it holds nothing that cannot be timed again. Delete it to time every shape again (after a change to
    the machine's load that the timing may have seen, say)."""
    from .kernels import on_new_tune_choice, restore_tune_choices

    if path is False:
        on_new_tune_choice(None)
        return 0
    path = choice_cache_path() if path is None else Path(path).expanduser()
    if path is None:
        on_new_tune_choice(None)
        return 0
    machine = machine_fingerprint()
    taken = {}
    try:
        taken = _choices_of(_read_cache(path).get(machine, []))
        restore_tune_choices(taken)
    except (OSError, ValueError) as e:
        logger.warning("%s: the kernels' saved choices are unreadable (%s); they are timed again and the file "
                       "rewritten", path, e)
        taken = {}

    def keep(key: tuple, name: str) -> None:
        try:
            try:
                machines = _read_cache(path)
                mine = _choices_of(machines.get(machine, []))
            except ValueError:  # damaged (warned about above, or since): replaced
                machines, mine = {}, {}
            mine[key] = name
            machines[machine] = [[_encode(k), v] for k, v in mine.items()]
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"format": _CACHE_FORMAT, "machines": machines}, indent=1) + "\n")
        except (OSError, ValueError) as e:  # a read-only home: the choices stay in this process only
            logger.warning("%s: cannot keep the kernels' timed choices there (%s); this process keeps them in "
                           "memory only", path, e)
            on_new_tune_choice(None)

    on_new_tune_choice(keep)
    return len(taken)
