"""The one record every benchmark returns: a Figure, with its samples, its baseline
samples (measured pair by pair in the same run) and its target.

A comparison's ratio is the median of the per-pair ratios sample[i] / baseline[i], not
the ratio of two medians: on a noisy machine a pair shares its moment's load, so the
per-pair ratio cancels most of it.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """`ratio`: median pair ratio must be <= value; `max`: the median must be <= value."""

    kind: str  # "ratio" | "max"
    value: float
    issue: int  # the issue that set it

    def render(self, unit: str) -> str:
        limit = f"≤ {self.value:g}×" if self.kind == "ratio" else f"≤ {self.value:g} {unit}"
        return f"{limit} (#{self.issue})"


@dataclass
class Figure:
    name: str
    unit: str  # "s", "ms", "MB"
    samples: list[float]
    accel: str  # the accelerator the figure was measured under ("tcg" here; "-" if none)
    baseline: list[float] = field(default_factory=list)  # paired with samples, same order
    baseline_name: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratios(self) -> list[float]:
        return [s / b for s, b in zip(self.samples, self.baseline) if b > 0]

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None without a target (or without the data it needs)."""
        if self.target is None or not self.samples:
            return None
        if self.target.kind == "ratio":
            return None if self.ratio is None else self.ratio <= self.target.value
        return self.median <= self.target.value

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(n=self.n, median=self.median if self.samples else None,
                   min=min(self.samples, default=None), max=max(self.samples, default=None),
                   baseline_median=self.baseline_median, ratios=self.ratios, ratio=self.ratio, met=self.met)
        return doc


@dataclass
class Skipped:
    """A benchmark that could not run here, and why (it is shown in the table)."""

    name: str
    reason: str
