"""Libraries of native.c from git revisions beside the working tree's, for modules_training_alone.py and
modules_training_step.py: each built by the current native.py (the modules' wrappers and every symbol it binds are
the same in these revisions) under a temporary XMODLM_KERNEL_CACHE; use() points native at one of them."""

import os
import subprocess
import tempfile
from pathlib import Path

from xmodlm.kernels import native


def load(revisions: dict) -> dict:
    """{name: library} for {name: git revision, a file's absolute path, or None for the working tree's native.c}."""
    folder = tempfile.mkdtemp()
    os.environ["XMODLM_KERNEL_CACHE"] = folder
    here, libraries = native.SOURCE, {}
    for i, (name, revision) in enumerate(revisions.items()):
        text = here.read_text() if revision is None else Path(revision).read_text() if revision.startswith("/") else subprocess.run(
            ["git", "show", f"{revision}:src/xmodlm/kernels/native.c"], cwd=here.parent, check=True,
            capture_output=True, text=True).stdout
        path = Path(folder) / f"native{i}.c"
        path.write_text(text)
        native._STATE.update(lib=None, tried=False)
        native.SOURCE = path
        libraries[name] = native._library()
        if libraries[name] is None:
            raise SystemExit(f"{name}: {native.reason()}")
    native.SOURCE = here
    return libraries


def use(libraries: dict, name: str) -> None:
    native._STATE["lib"] = libraries[name]
