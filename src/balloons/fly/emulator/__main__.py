"""``python -m balloons.fly.emulator``: serve the emulator (see ``server.main``)."""

from .server import main

raise SystemExit(main())
