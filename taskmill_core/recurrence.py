"""When a recurring schedule is due: pure time arithmetic with an explicit ``now``.

Two kinds of schedule (PROTOCOL.md, "Recurring schedules"):

- **Fixed rate** (``every_ms``): due at ``start_at + k * every_ms``. Each next time is computed
  from that grid, never from when the last firing ran, so a late firing causes no drift, and
  firings missed while the app was closed collapse into one (the next time is the first grid
  point after now).
- **Cron** (``cron`` in ``timezone``): five fields matched against the *wall clock* of the zone.
  The field matching (ranges, steps, names, Vixie cron's "either day field may match") is the
  ``cronsim`` library's, run over naive local times; this module maps each matching wall time
  to an instant itself, because the contract's DST rules differ from the library's: a wall time
  that does not exist (in the spring-forward gap) fires once right after the gap at the same
  distance past the hour (02:30 → 03:30, what ``zoneinfo`` gives with ``fold=0``), and a
  repeated wall time (fall back) fires at its first occurrence only. (``cronsim`` moves a
  02:30 job to 03:00 and skips a ``*/20 2 * * *`` job entirely on the spring-forward day.)

Times are epoch milliseconds, as everywhere in the core.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal
from cronsim import CronSim, CronSimError

from taskmill_core.errors import InvalidParams

__all__ = ["Cron", "local_zone_name", "next_on_grid", "zone"]

_NAMES = {
    3: "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC",
    4: "SUN|MON|TUE|WED|THU|FRI|SAT",
}
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
# How many matching wall times a search may pass over before giving up: a repeated hour (fall
# back) can hold up to 60 per-minute matches that lie before ``now``.
_SEARCH_LIMIT = 200


def _field_pattern(index: int) -> re.Pattern[str]:
    value = r"\d+" if index not in _NAMES else rf"(?:\d+|{_NAMES[index]})"
    item = rf"(?:\*|{value}(?:-{value})?)(?:/\d+)?"
    return re.compile(rf"^{item}(?:,{item})*$")


_FIELDS = [_field_pattern(i) for i in range(5)]


def zone(name: str, path: str = "$.timezone") -> ZoneInfo:
    """The IANA zone ``name`` (``Europe/Berlin``); ``InvalidParams`` naming ``path`` if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidParams(f"unknown time zone {name!r}", path) from None


def local_zone_name() -> str:
    """The machine's IANA zone name (``TZ``, else what the OS says: ``/etc/localtime``, the
    Windows registry, ... — read by ``tzlocal``); ``UTC`` when none names a zone we know."""
    with contextlib.suppress(Exception):  # tzlocal raises its own errors for odd setups
        tzlocal.reload_localzone()  # read anew: a laptop may have changed zones since
        name = tzlocal.get_localzone_name()
        if name:
            ZoneInfo(name)
            return str(name)
    return "UTC"


def next_on_grid(start_at: int, every_ms: int, after_ms: int) -> int:
    """The first time ``start_at + k * every_ms`` (k ≥ 0) later than ``after_ms``."""
    if after_ms < start_at:
        return start_at
    return start_at + ((after_ms - start_at) // every_ms + 1) * every_ms


@dataclass(frozen=True)
class Cron:
    """A checked five-field cron expression in one zone."""

    expression: str
    tz: ZoneInfo

    @classmethod
    def parse(cls, expression: str, tz: ZoneInfo, path: str = "$.cron") -> Cron:
        """Check ``expression`` against the contract's syntax (five fields of ``*``, numbers,
        ``a-b``, lists, ``/n`` steps, month and weekday names); ``InvalidParams`` naming
        ``path`` and the field otherwise. Extensions of the library (``L``, ``W``, ``#``,
        a seconds field) are refused: other implementations of the protocol need not have them.
        """
        fields = expression.upper().split()
        if len(fields) != 5:
            raise InvalidParams(
                f"a cron expression has five fields (minute hour day-of-month month "
                f"day-of-week); {expression!r} has {len(fields)}",
                path,
            )
        for i, (text, pattern) in enumerate(zip(fields, _FIELDS, strict=True)):
            if not pattern.match(text):
                raise InvalidParams(f"bad {_FIELD_NAMES[i]} field {text!r} in the cron", path)
        normal = " ".join(fields)
        try:
            it = CronSim(normal, datetime(2000, 1, 1))
            next(it)
        except (CronSimError, StopIteration) as exc:
            raise InvalidParams(f"bad cron expression {expression!r}: {exc}", path) from None
        return cls(normal, tz)

    def next_after(self, after_ms: int) -> int | None:
        """The first firing time later than ``after_ms`` (None if the expression never
        matches again).

        Away from a DST change this is the library's next wall time after now's. Near one,
        the wall-time order and the instant order differ (02:20 in the gap lands at 03:20,
        after a real 03:00), so the search starts a little earlier in wall time and takes the
        earliest instant later than ``after_ms`` among the matches of the next hours.
        """
        after = datetime.fromtimestamp(after_ms / 1000, UTC)
        wall = after.astimezone(self.tz).replace(tzinfo=None)
        if self._shifts_near(after):
            wall -= _NEAR
        best: int | None = None
        horizon: datetime | None = None
        try:
            it = CronSim(self.expression, wall)
            for _ in range(_SEARCH_LIMIT):
                local = next(it)
                if horizon is not None and local > horizon:
                    break
                # fold=0: a repeated wall time is its first occurrence; a missing one (in
                # the gap) takes the offset before the gap, i.e. lands as far past the gap.
                instant = local.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
                at_ms = _epoch_ms(instant)
                if at_ms <= after_ms:
                    continue
                if best is None or at_ms < best:
                    best = at_ms
                if horizon is None:
                    if not self._shifts_near(instant):
                        break
                    horizon = local + _NEAR
        except (CronSimError, StopIteration):
            pass
        return best

    def _shifts_near(self, instant: datetime) -> bool:
        """Whether the zone's offset changes within ``_NEAR`` of ``instant``."""
        offset = instant.astimezone(self.tz).utcoffset()
        return (instant - _NEAR).astimezone(self.tz).utcoffset() != offset or (
            instant + _NEAR
        ).astimezone(self.tz).utcoffset() != offset


_NEAR = timedelta(hours=3)  # longer than any DST shift (at most 2 h)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(milliseconds=1)
