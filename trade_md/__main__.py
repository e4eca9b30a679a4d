"""``python -m trade_md`` runs the ``trade-md`` command line."""
import sys

from .cli import main

sys.exit(main())
