"""Checking a submit's call before anything is stored: its arguments bound to the task's
signature, and the per-call options still given the former way (``_delay=``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from .task import Task

#: The per-call options' former spelling, as keywords of ``submit``.
SUBMIT_KWARGS = frozenset({"_delay", "_at", "_key", "_priority"})


def deprecated_call_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the per-call options given the former way (``submit(..., _delay=30)``) out of
    ``kwargs``, with a ``DeprecationWarning`` naming the new spelling."""
    import warnings

    call = {k[1:]: kwargs.pop(k) for k in sorted(SUBMIT_KWARGS & kwargs.keys())}
    spelled = ", ".join(f"{k}=..." for k in call)
    warnings.warn(
        f"submit(..., {', '.join('_' + k + '=...' for k in call)}) is deprecated: "
        f"use task.options({spelled}).submit(...)",
        DeprecationWarning,
        stacklevel=5,  # the caller of task.submit (through Dispatcher.submit, submit_args)
    )
    return call


def check_call(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the task and the problem unless ``args`` and ``kwargs`` bind
    to the signature of the task's function. The check is made once per task (kept on it) into
    a function with that signature and no body, which the interpreter binds the call to: under
    half a microsecond a submit, where ``inspect.Signature.bind`` takes about four."""
    binder = task._binder
    if binder is None:
        binder = task._binder = binder_of(task.fn)
    if isinstance(binder, bool):
        return
    try:
        binder(*args, **kwargs)
    except TypeError as exc:
        problem = str(exc).removeprefix(f"{_BINDER}() ")
        raise TypeError(f"cannot submit {task.name}{binder.__doc__}: {problem}") from None


_BINDER = "call"


def binder_of(fn: Callable[..., Any]) -> Callable[..., None] | bool:
    """A function that takes the arguments ``fn`` takes and does nothing (its docstring is
    ``fn``'s signature, without annotations), or False when ``fn`` has no signature to check
    against."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (ValueError, TypeError):  # a callable that does not say what it takes
        return False
    kind = inspect.Parameter
    params: list[str] = []
    for p in sig.parameters.values():
        if p.kind is kind.KEYWORD_ONLY and not any(x.startswith("*") for x in params):
            params.append("*")
        star = "**" if p.kind is kind.VAR_KEYWORD else "*" if p.kind is kind.VAR_POSITIONAL else ""
        params.append(f"{star}{p.name}{'=None' if p.default is not p.empty else ''}")
    positional_only = sum(p.kind is kind.POSITIONAL_ONLY for p in sig.parameters.values())
    if positional_only:
        params.insert(positional_only, "/")
    space: dict[str, Any] = {}
    # The source holds only the parameters' names (identifiers) and placeholder defaults:
    # binding depends on which parameters have a default, never on its value.
    exec(f"def {_BINDER}({', '.join(params)}): pass", space)  # noqa: S102
    binder: Callable[..., None] = space[_BINDER]
    plain = [p.replace(annotation=p.empty) for p in sig.parameters.values()]
    binder.__doc__ = str(sig.replace(parameters=plain, return_annotation=sig.empty))
    return binder
