"""Recovery times: from the moment a consumer was killed to the moment nothing is held under its name."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .checker import QueueState


@dataclass(slots=True)
class RecoveryTracker:
    killed_at: dict[str, float] = field(default_factory=dict)
    recovered_after: dict[str, float] = field(default_factory=dict)

    def killed(self, name: str) -> None:
        self.killed_at[name] = time.monotonic()

    def observe(self, state: QueueState) -> None:
        now = time.monotonic()
        for name, moment in self.killed_at.items():
            if name not in self.recovered_after and state.held_by.get(name, 0) == 0:
                self.recovered_after[name] = now - moment

    def times(self) -> list[float | None]:
        return [self.recovered_after.get(name) for name in self.killed_at]

    def unrecovered(self) -> list[str]:
        return [name for name in self.killed_at if name not in self.recovered_after]
