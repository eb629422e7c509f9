"""``python -m xmodlm`` (and ``torchrun -m xmodlm``) run the CLI."""

import sys

from .cli import main

sys.exit(main())
