"""The times of recurring schedules (taskmill_core.recurrence): pure arithmetic, plain data."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from taskmill_core import InvalidParams
from taskmill_core.recurrence import Cron, local_zone_name, next_on_grid, zone

BERLIN = ZoneInfo("Europe/Berlin")


def ms(*args: int, tz: ZoneInfo = BERLIN, fold: int = 0) -> int:
    return int(datetime(*args, tzinfo=tz, fold=fold).timestamp() * 1000)  # type: ignore[misc]


def local(at: int, tz: ZoneInfo = BERLIN) -> str:
    return datetime.fromtimestamp(at / 1000, tz).strftime("%m-%d %H:%M%z")


def firings(cron: str, start: int, count: int, tz: ZoneInfo = BERLIN) -> list[str]:
    c = Cron.parse(cron, tz)
    out, at = [], start
    for _ in range(count):
        nxt = c.next_after(at)
        assert nxt is not None and nxt > at
        out.append(local(nxt, tz))
        at = nxt
    return out


def test_the_grid_is_start_plus_whole_periods() -> None:
    assert next_on_grid(1000, 500, 0) == 1000  # before the start: the start
    assert next_on_grid(1000, 500, 1000) == 1500  # strictly later than "after"
    assert next_on_grid(1000, 500, 2499) == 2500
    assert next_on_grid(1000, 500, 10_000_000) == 10_000_500


def test_every_missing_time_of_the_gap_fires_once_after_it() -> None:
    # 2026-03-29 in Berlin: 02:00 CET -> 03:00 CEST. 02:00, 02:20 and 02:40 do not exist.
    got = firings("*/20 2 * * *", ms(2026, 3, 28, 12, 0), 4)
    assert got == ["03-29 03:00+0200", "03-29 03:20+0200", "03-29 03:40+0200", "03-30 02:00+0200"]


def test_times_across_the_gap_neither_repeat_nor_go_back() -> None:
    got = firings("*/20 * * * *", ms(2026, 3, 29, 1, 30), 5)
    assert got == [
        "03-29 01:40+0100",
        "03-29 03:00+0200",
        "03-29 03:20+0200",
        "03-29 03:40+0200",
        "03-29 04:00+0200",
    ]


def test_a_repeated_hour_fires_only_at_its_first_occurrence() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET; 02:00-02:59 happen twice.
    got = firings("*/30 2 * * *", ms(2026, 10, 25, 1, 0), 3)
    assert got == ["10-25 02:00+0200", "10-25 02:30+0200", "10-26 02:00+0100"]


def test_from_inside_the_second_occurrence_the_next_is_after_the_repeat() -> None:
    inside = ms(2026, 10, 25, 2, 10, fold=1)  # 02:10 CET, the second 02:10
    assert local(Cron.parse("30 2 * * *", BERLIN).next_after(inside) or 0) == "10-26 02:30+0100"


def test_either_day_field_may_match_and_names_and_seven_are_accepted() -> None:
    utc = ZoneInfo("UTC")
    got = firings("0 0 13 * FRI", ms(2026, 1, 1, 12, 0, tz=utc), 3, utc)
    assert got == ["01-02 00:00+0000", "01-09 00:00+0000", "01-13 00:00+0000"]
    assert firings("0 9 * jan-mar 7", ms(2026, 1, 1, 0, 0, tz=utc), 1, utc) == ["01-04 09:00+0000"]


@pytest.mark.parametrize(
    "cron",
    ["", "* * * *", "* * * * * *", "@daily", "0 0 L * *", "0 0 ? * *", "0 0 1W * *",
     "0 0 * * 5#2", "60 * * * *", "0 24 * * *", "0 0 30 2 *", "0 0 * FOO *", "0 0 * * JAN"],
)  # fmt: skip
def test_anything_beyond_the_contracts_syntax_is_refused(cron: str) -> None:
    with pytest.raises(InvalidParams) as err:
        Cron.parse(cron, BERLIN)
    assert err.value.data["path"] == "$.cron"


def test_an_unknown_zone_is_refused() -> None:
    for name in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(InvalidParams) as err:
            zone(name)
        assert err.value.data["path"] == "$.timezone"


def test_the_machine_zone_comes_from_tz_and_unknown_names_fall_back_to_utc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    assert local_zone_name() == "America/New_York"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert local_zone_name() == "UTC"
