"""``python -m balloons.machine``: run the job named by ``BALLOONS_JOB``, then any warm ones."""

import sys

from .worker import main

sys.exit(main())
