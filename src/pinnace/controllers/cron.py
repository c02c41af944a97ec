"""Cron schedules, as CronJobs read them: five fields, names, steps, ranges, macros, time zones.

`minute hour day-of-month month day-of-week`, each `*`, `?`, `a`, `a-b`, `*/n`, `a-b/n` or a comma list;
months and weekdays also by name (jan, mon). `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/
`@midnight` and `@hourly` stand for their usual schedules. As in cron (and robfig/cron, which Kubernetes
uses), when both day fields are restricted a day matching either one runs. `CRON_TZ=Zone ` or `TZ=Zone `
before the schedule, or the CronJob's `timeZone`, selects the time zone; UTC otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}


class ScheduleError(ValueError):
    pass


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
            if step <= 0:
                raise ScheduleError(f"step must be positive in {text!r}")
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(part, names)
            end = high if step > 1 else start
        if start < low or end > high or start > end:
            raise ScheduleError(f"{text!r} is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int] | None) -> int:
    if names and text in names:
        return names[text]
    try:
        return int(text)
    except ValueError:
        raise ScheduleError(f"{text!r} is not a number or name") from None


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool
    zone: dt.tzinfo

    def _day_matches(self, day: dt.datetime) -> bool:
        weekday = (day.weekday() + 1) % 7  # cron counts from Sunday
        in_days, in_weekdays = day.day in self.days, weekday in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first scheduled minute strictly after `after` (an aware datetime; the result is in UTC)."""
        moment = after.astimezone(self.zone).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = moment + dt.timedelta(days=366 * 5)
        while moment < limit:
            if moment.month not in self.months:
                year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
                moment = moment.replace(year=year, month=month, day=1, hour=0, minute=0)
                continue
            if not self._day_matches(moment):
                moment = (moment + dt.timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if moment.hour not in self.hours:
                moment = (moment + dt.timedelta(hours=1)).replace(minute=0)
                continue
            if moment.minute not in self.minutes:
                moment += dt.timedelta(minutes=1)
                continue
            return moment.astimezone(dt.UTC)
        raise ScheduleError("the schedule never runs")


def parse(schedule: str, time_zone: str | None = None) -> Schedule:
    text = schedule.strip()
    for prefix in ("CRON_TZ=", "TZ="):
        if text.startswith(prefix):
            zone_name, _, text = text[len(prefix):].partition(" ")
            time_zone = zone_name
            text = text.strip()
    text = MACROS.get(text, text)
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: {schedule!r}")
    try:
        zone: dt.tzinfo = ZoneInfo(time_zone) if time_zone else dt.UTC
    except (KeyError, ValueError) as error:
        raise ScheduleError(f"unknown time zone {time_zone!r}") from error
    weekdays = _field(fields[4], 0, 7, _DAYS)
    if 7 in weekdays:  # both 0 and 7 mean Sunday
        weekdays = frozenset((weekdays - {7}) | {0})
    return Schedule(
        minutes=_field(fields[0], 0, 59), hours=_field(fields[1], 0, 23), days=_field(fields[2], 1, 31),
        months=_field(fields[3], 1, 12, _MONTHS), weekdays=weekdays,
        days_restricted=fields[2] not in ("*", "?"), weekdays_restricted=fields[4] not in ("*", "?"), zone=zone)
