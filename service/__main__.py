"""``python -m service`` is ``benchmark-worker``."""

import sys

from service.cli import main

sys.exit(main())
