"""``python -m ops.console``: the console for a few nodes (``ops.tools.console``), at the name users type."""

import sys

from ops.tools.console.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
