"""``python -m proxima_actor``: the ``proxima-actor`` command."""

import sys

from .cli import main

sys.exit(main())
