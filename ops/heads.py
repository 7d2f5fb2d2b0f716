"""``python -m ops.heads``: fit and list the classify heads (``ops.tools.heads``), at the name users type."""

import sys

from ops.tools.heads import main

if __name__ == "__main__":
    sys.exit(main())
