"""Prometheus' text format of ``/metrics``, written by this module rather than by
``prometheus_client.generate_latest``: byte for byte the same text (a test compares them), in
a fraction of the time.

Most of a scrape's lines are the aggregates' histograms and counters by pool and task. Their
families here (:class:`Histograms`, :class:`Counters`) keep each label set as a row, as read,
and make prometheus_client's samples from the rows only when something asks for them
(``generate_latest``), once; :func:`exposition` writes their lines straight from the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .aggregates import Histogram


class Histograms(HistogramMetricFamily):
    """A histogram family by pool and task, its label sets kept as rows."""

    def __init__(self, name: str, documentation: str) -> None:
        self.rows: list[tuple[str, str, Histogram]] = []
        self._made = False
        super().__init__(name, documentation, labels=["pool", "task"])

    def add_row(self, pool: str, task: str, h: Histogram) -> None:
        """Adds the histogram of one pool and task."""
        self.rows.append((pool, task, h))
        if self._made:
            self.add_metric([pool, task], h.cumulative(), sum_value=h.total)

    @property
    def samples(self) -> list[Sample]:
        """The samples of the rows, made on first use (and none other)."""
        if not self._made:
            self._made = True
            for pool, task, h in self.rows:
                self.add_metric([pool, task], h.cumulative(), sum_value=h.total)
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value


class Counters(CounterMetricFamily):
    """A counter family, its label sets kept as rows (label values in ``labels`` order)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.rows: list[tuple[Sequence[str], float]] = []
        self.names = tuple(labels)
        self._made = False
        super().__init__(name, documentation, labels=labels)

    def add_row(self, values: Sequence[str], value: float) -> None:
        """Adds the count of one label set."""
        self.rows.append((values, value))
        if self._made:
            self.add_metric(values, value)

    @property
    def samples(self) -> list[Sample]:
        """The samples of the rows, made on first use (and none other)."""
        if not self._made:
            self._made = True
            for values, value in self.rows:
                self.add_metric(values, value)
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in Prometheus' text format (what ``generate_latest`` writes for
    gauges, counters and histograms): the rows of :class:`Histograms` and :class:`Counters`
    written directly, other samples with each label set escaped once."""
    out: list[str] = []
    labels: dict[tuple[tuple[str, str], ...], str] = {}
    escaped: dict[str, str] = {}
    for metric in registry.collect():
        name, kind = metric.name, metric.type
        if kind == "counter":
            name += "_total"
        elif kind not in ("gauge", "histogram"):
            kind = "untyped"
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        if isinstance(metric, Histograms):
            _histogram_lines(metric, out, escaped)
            continue
        if isinstance(metric, Counters):
            _counter_lines(metric, name, out, escaped)
            continue
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            key = tuple(sorted(sample.labels.items()))
            text = labels.get(key)
            if text is None:
                text = labels[key] = (
                    "{" + ",".join(f'{k}="{_escaped(v, escaped)}"' for k, v in key) + "}"
                    if key
                    else ""
                )
            out.append(f"{sample.name}{text} {_go_float(sample.value)}\n")
    return "".join(out).encode("utf-8")


def _histogram_lines(metric: Histograms, out: list[str], escaped: dict[str, str]) -> None:
    """The lines of a histogram family's rows, as ``generate_latest`` writes their samples
    (labels sorted: ``le``, ``pool``, ``task``)."""
    name = metric.name
    for pool, task, h in metric.rows:
        rest = f'pool="{_escaped(pool, escaped)}",task="{_escaped(task, escaped)}"'
        cumulative = h.cumulative()
        for le, n in cumulative:
            out.append(f'{name}_bucket{{le="{le}",{rest}}} {_go_float(n)}\n')
        out.append(f"{name}_count{{{rest}}} {_go_float(cumulative[-1][1])}\n")
        out.append(f"{name}_sum{{{rest}}} {_go_float(h.total)}\n")


def _counter_lines(metric: Counters, name: str, out: list[str], escaped: dict[str, str]) -> None:
    """The lines of a counter family's rows (``name`` ends in ``_total``), labels sorted by
    name as ``generate_latest`` writes them."""
    order = sorted(range(len(metric.names)), key=lambda i: metric.names[i])
    keys = [metric.names[i] for i in order]
    for values, value in metric.rows:
        text = ",".join(
            f'{k}="{_escaped(values[i], escaped)}"' for k, i in zip(keys, order, strict=True)
        )
        line = f"{name}{{{text}}}" if text else name
        out.append(f"{line} {_go_float(value)}\n")


#: A sample's value as Prometheus' Go code writes it (``1.0``, ``+Inf``, ``1.5e+07``).
_go_float = cast("Callable[[float], str]", floatToGoString)


def _escaped(value: str, seen: dict[str, str]) -> str:
    """A label value escaped, each distinct value once per scrape."""
    out = seen.get(value)
    if out is None:
        out = seen[value] = _escape(value)
    return out


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
