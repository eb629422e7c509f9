"""Suite-wide settings: tiny models run fastest on one thread, and subprocesses (torchrun tests)
must not oversubscribe the cores either."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# the command's per-machine file of kernel choices: not the user's, and no test's timing taken over from another's
# (tests/test_runtime.py gives it a file of its own)
os.environ["XMODLM_KERNEL_CACHE"] = "off"

import torch  # noqa: E402  (after the variable, so that child processes inherit it)

torch.set_num_threads(1)
