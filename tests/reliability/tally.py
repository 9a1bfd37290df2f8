"""The suite's tally of injected faults: how many, how many survived, how much committed
data was lost (must stay 0). Tests add rows; conftest prints it at the end of the run."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest


@dataclass
class Tally:
    rows: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, kind: str, *, injected: int = 0, survived: int = 0, lost: int = 0) -> None:
        row = self.rows.setdefault(kind, {"injected": 0, "survived": 0, "lost": 0})
        row["injected"] += injected
        row["survived"] += survived
        row["lost"] += lost

    def render(self) -> str:
        head = f"{'fault':52} {'injected':>8} {'survived':>8} {'data lost':>9}"
        lines, total = [head], {"injected": 0, "survived": 0, "lost": 0}
        for kind, row in self.rows.items():
            lines.append(f"{kind:52} {row['injected']:>8} {row['survived']:>8} {row['lost']:>9}")
            total = {k: total[k] + row[k] for k in total}
        lines.append(f"{'total':52} {total['injected']:>8} {total['survived']:>8} {total['lost']:>9}")
        return "\n".join(lines)


TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    return TALLY
