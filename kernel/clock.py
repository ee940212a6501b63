"""The one source of "now". Tests set it; nothing else reads the system time directly.

A test that starts Encours processes (`encours serve`, `encours worker`) sets their clock with
ENCOURS_CLOCK_FILE: the file holds one aware ISO 8601 moment, read again whenever it changes, so
the test moves every process's "now" at once by rewriting it (never used in production)."""

from __future__ import annotations

import os
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo


class Clock:
    def __init__(self) -> None:
        self._frozen: datetime | None = None
        self._source: str | None = None
        self._source_stamp: tuple[int, int, int] | None = None

    def now(self) -> datetime:
        """Aware UTC datetime."""
        if self._source is not None:
            self._read_source()
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
        self._source = self._source_stamp = None

    def follow(self, path: str) -> None:
        """Take "now" from the file at `path` from now on (ENCOURS_CLOCK_FILE); raises ValueError
        when it cannot be read or holds no aware moment."""
        self._source, self._source_stamp = path, None
        self._read_source()

    def _read_source(self) -> None:
        assert self._source is not None
        try:
            status = os.stat(self._source)
            # Rewritten in place or replaced (a rename): either changes one of these.
            stamp = (status.st_mtime_ns, status.st_ino, status.st_size)
            if stamp == self._source_stamp:
                return
            with open(self._source, encoding="utf-8") as file:
                text = file.read().strip()
        except OSError as error:
            raise ValueError(f"ENCOURS_CLOCK_FILE {self._source}: {error.strerror or error}") from None
        try:
            moment = datetime.fromisoformat(text)
            self.set(moment)
        except ValueError:
            raise ValueError(f"ENCOURS_CLOCK_FILE {self._source} holds no aware ISO 8601 moment: {text[:40]!r}") \
                from None
        self._source_stamp = stamp


clock = Clock()
