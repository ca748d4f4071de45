"""The time stamps a forecast is for: the next steps of a series on its own calendar, and labels as users write them.

A series' calendar is read from its dates, not assumed: the usual step between rows, the weekdays it has rows
on and the hours of its trading session. So daily business data forecasts business days (a holiday among the
last rows does not turn the forecast daily), hourly bars stay within the session, and month-end data stays on
month ends.
"""

from __future__ import annotations

import pandas as pd

DAY = pd.Timedelta(days=1)


def future_stamps(dates: pd.DatetimeIndex, horizon: int) -> pd.DatetimeIndex:
    """The ``horizon`` time stamps after ``dates[-1]`` on the calendar of ``dates`` (sorted, unique)."""
    recent = dates[-1000:]  # the calendar as it is now: old rows may follow another schedule
    steps = pd.Series(recent[1:] - recent[:-1])
    step = steps.mode().min() if len(steps) else DAY  # the most common step; the shortest on ties
    if step >= pd.Timedelta(days=28):
        return _monthly(recent, horizon, step)
    return _in_session(recent, horizon, step)


def _monthly(dates: pd.DatetimeIndex, horizon: int, step: pd.Timedelta) -> pd.DatetimeIndex:
    """Monthly, quarterly or yearly data: pandas' own frequency when it names one (``ME``, ``BME``, ``QE``), else
    whole months after the last date (month ends stay month ends)."""
    freq = pd.infer_freq(dates[-12:]) if len(dates) >= 3 else None
    if freq is not None:
        return pd.date_range(dates[-1], periods=horizon + 1, freq=freq)[1:]
    months = max(1, round(step / pd.Timedelta(days=30.4375)))
    if all(d.is_month_end for d in dates[-12:]):
        return pd.DatetimeIndex([dates[-1] + pd.offsets.MonthEnd(months * i) for i in range(1, horizon + 1)])
    return pd.DatetimeIndex([dates[-1] + pd.DateOffset(months=months * i) for i in range(1, horizon + 1)])


def _in_session(dates: pd.DatetimeIndex, horizon: int, step: pd.Timedelta) -> pd.DatetimeIndex:
    """Steps of ``step`` on the weekdays the series has rows on, within the times of day it has rows at."""
    weekdays = set(dates.dayofweek)
    days = dates.normalize()
    latest = dates[days.isin(days.unique()[-10:])]  # the session as it is now: UTC stamps move with daylight saving
    time_of_day = latest - latest.normalize()
    opens, closes = time_of_day.min(), time_of_day.max()
    stamps, t = [], dates[-1]
    while len(stamps) < horizon:
        t = t + step
        day = t.normalize()
        if t - day > closes or day.dayofweek not in weekdays:  # after the session, or a day without rows
            day += DAY
            while day.dayofweek not in weekdays:
                day += DAY
            t = day + opens
        elif t - day < opens:  # before the session opens
            t = day + opens
        stamps.append(t)
    return pd.DatetimeIndex(stamps)


def labels(dates: pd.DatetimeIndex, like: pd.DatetimeIndex | None = None) -> list[str]:
    """Dates as users write them: the day alone when every stamp (of ``dates`` and ``like``) is at midnight, else
    with the time of day, so intraday rows keep distinct labels."""
    stamps = dates if like is None else dates.append(like)
    daily = bool((stamps == stamps.normalize()).all())
    return [d.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M:%S") for d in dates]
