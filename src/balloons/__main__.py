"""``python -m balloons``: the same CLI as the ``balloons`` command."""

from .cli import main
from .cli.common import PROG

main(prog_name=PROG)
