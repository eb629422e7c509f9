"""Side-by-side benchmark against transformers' Xmod: the script behind ``xmodlm bench``.

    python3 benchmarks/bench.py                       # every suite at the targets' shapes
    python3 benchmarks/bench.py --suite train,infer   # the model benchmark alone
    python3 benchmarks/bench.py --quick               # small shapes, a smoke run
"""

import sys

from xmodlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
