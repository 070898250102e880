"""What is wrong with a job spec: a list of problems, or one error carrying them."""

from __future__ import annotations

from dataclasses import dataclass

from bacalhau.errors import UsageError


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped, so it stays one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class Problem:
    """One rule a spec breaks: the field (e.g. "outputs[1].name"), what is wrong, the fix."""

    field: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        return one_line(f"{text} ({self.hint})" if self.hint else text)


class SpecError(UsageError):
    """A spec breaks the rules; `problems` lists them all, the message names the first."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("a SpecError needs at least one problem")
        first = problems[0]
        more = len(problems) - 1
        message = first.message + (
            f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        )
        super().__init__(one_line(message), hint=one_line(first.hint) or None)
        self.problems = list(problems)
