"""``python -m kpbench``: the ``kpbench`` command."""
import sys

from kpbench.cli.main import main

sys.exit(main())
