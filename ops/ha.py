"""``python -m ops.ha``: the HA demo and its failover drill (``ops.tools.ha``), at the name users type."""

import sys

from ops.tools.ha import main

if __name__ == "__main__":
    sys.exit(main())
