"""Suite-wide settings: tiny models run fastest on one thread, and subprocesses (torchrun tests)
must not oversubscribe the cores either."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the variable, so that child processes inherit it)

torch.set_num_threads(1)
