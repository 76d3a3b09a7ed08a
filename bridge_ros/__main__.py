"""``python -m bridge_ros ros bridge CONFIG`` / ``ros export …``: the ``ark ros`` commands standalone."""

import sys

from bridge_ros.cli import main

sys.exit(main())
