"""What the processor offers that changes which kernel is fastest: AMX (Intel's matrix tiles, which make
bf16 matrix products several times faster than fp32 ones), detected once, with an override."""

from __future__ import annotations

import functools

import torch

_OVERRIDE: dict[str, bool | None] = {"amx": None}


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str] | None:
    """The processor's feature flags as the kernel lists them (Linux), or None where there is no list."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def _detected_amx_bf16() -> bool:
    """AMX with bf16 tiles: the kernel's flag list (Linux), which names the bf16 extension itself, else
    torch's own check of the tile unit where this torch has it."""
    flags = cpu_flags()
    if flags is not None:
        return "amx_bf16" in flags
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


def amx_bf16() -> bool:
    """True where bf16 matrix products run on AMX tiles (or where ``prefer_amx_paths(True)`` says so)."""
    forced = _OVERRIDE["amx"]
    return _detected_amx_bf16() if forced is None else forced


def prefer_amx_paths(enabled: bool | None) -> None:
    """Take the paths chosen for AMX processors (True), the others (False), or as detected (None, the
    default). For comparisons on one machine and for tests; the results are the same to float32 grade."""
    _OVERRIDE["amx"] = None if enabled is None else bool(enabled)


def amx_overridden() -> bool:
    """Whether ``prefer_amx_paths`` overrides the detection."""
    return _OVERRIDE["amx"] is not None
