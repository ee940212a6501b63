"""The one source of "now". Tests set it; nothing else reads the system time directly."""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo


class Clock:
    def __init__(self) -> None:
        self._frozen: datetime | None = None

    def now(self) -> datetime:
        """Aware UTC datetime."""
        return self._frozen if self._frozen is not None else datetime.now(timezone.utc)

    def today(self, tz: str = "UTC") -> date:
        """Today's date in the given IANA timezone (a company's local date)."""
        return self.now().astimezone(ZoneInfo(tz)).date()

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the clock takes aware datetimes")
        self._frozen = moment.astimezone(timezone.utc)

    def reset(self) -> None:
        self._frozen = None


clock = Clock()
