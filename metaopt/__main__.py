"""``python -m metaopt``: the same as the ``metaopt`` console script."""
from .cli import main

raise SystemExit(main())
