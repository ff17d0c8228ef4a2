"""``python -m balloons.cli``: the same CLI as the ``balloons`` command."""

from . import main
from .common import PROG

main(prog_name=PROG)
