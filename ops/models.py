"""``python -m ops.models``: the model store's command line (``ops.store.cli``), at the name users type."""

import sys

from ops.store.cli import main

if __name__ == "__main__":
    sys.exit(main())
