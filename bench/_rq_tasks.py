"""The RQ task of the benchmarks: a module that imports nothing, so a work horse pays only
for RQ itself."""


def noop() -> None:
    return None


def echo(x: object) -> object:
    return x
