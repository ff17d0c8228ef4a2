"""``python -m balloons.cli``: the same CLI as the ``balloons`` command."""

from . import main

main()
