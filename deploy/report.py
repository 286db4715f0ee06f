"""What a deploy subcommand prints, kept so tests and callers can read it back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Report:
    out: Callable[[str], None] = field(default=print, repr=False)
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def say(self, line: str) -> None:
        self.lines.append(line)
        self.out(line)

    def fail(self, line: str) -> None:
        """A line that makes the command exit non-zero."""
        self.failures.append(line)
        self.say(line)

    def log_tail(self, log: str, lines: int = 20) -> None:
        """The last ``lines`` lines of a function's log, indented under the line they explain."""
        for line in log.splitlines()[-lines:]:
            self.say(f"    log: {line}")
