"""The model store: versions on disk under a MANIFEST (``versions``, ``manifest``), the journalled link
switch (``ledger``), which version serves (``follower``), whether its files still match (``integrity``),
gray releases (``gray``) and the command line (``cli``, run as ``python -m ops.models``).
docs/internals.md, "The model store", has the rules."""
