"""``python -m balloons``: the same CLI as the ``balloons`` command."""

from .cli import main

main()
