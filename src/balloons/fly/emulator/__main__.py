"""``python -m balloons.fly.emulator``: serve the emulator (the command of ``.cli``)."""

from .cli import main

main(prog_name="python -m balloons.fly.emulator")
