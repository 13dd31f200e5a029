"""The Dashboard's activity chart, laid out on the server as plain numbers for an inline SVG.

No chart library and no script: the page shows the chart with Shopify's CDN (or any CDN) out of
reach. One chart per currency: for each day, three bars (issued, redeemed, expired).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ledger.money import exponent, format_amount, parse_amount

SERIES = ("issued", "redeemed", "expired")
WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 28  # room for the amount and date labels
GRIDLINES = 4


@dataclass(frozen=True)
class Bar:
    series: str
    x: float
    y: float
    width: float
    height: float
    title: str  # the tooltip: day, series and amount


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DayLabel:
    x: float
    label: str


@dataclass
class Chart:
    currency: str
    days: list[dict[str, Any]]  # every day of the period, zeros included (the table view)
    totals: dict[str, str]  # per series, over the period
    bars: list[Bar] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    day_labels: list[DayLabel] = field(default_factory=list)
    moved: bool = False  # any credit issued, redeemed or expired in the period
    width: int = WIDTH
    height: int = HEIGHT
    baseline: float = HEIGHT - BOTTOM
    left: int = LEFT


def activity_charts(activity: dict[str, Any]) -> list[Chart]:
    """One chart per currency from ``activity`` ({"from", "to", "days": [{"date", "currency",
    "issued", "redeemed", "expired"}]}, amounts as decimal strings; days may be sparse)."""
    first, last = date.fromisoformat(activity["from"][:10]), date.fromisoformat(activity["to"][:10])
    period = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    minor: dict[str, dict[date, dict[str, int]]] = defaultdict(dict)
    for day in activity["days"]:
        currency = day["currency"]
        minor[currency][date.fromisoformat(day["date"][:10])] = {
            name: parse_amount(day[name], currency, allow_zero=True, allow_negative=True)
            for name in SERIES
        }
    return [_chart(currency, period, minor[currency]) for currency in sorted(minor)]


def _chart(currency: str, period: list[date], values: dict[date, dict[str, int]]) -> Chart:
    zero = dict.fromkeys(SERIES, 0)
    rows = [(day, values.get(day, zero)) for day in period]
    chart = Chart(
        currency=currency,
        days=[
            {"date": day.isoformat()} | {n: format_amount(v[n], currency) for n in SERIES}
            for day, v in rows
        ],
        totals={n: format_amount(sum(abs(v[n]) for _, v in rows), currency) for n in SERIES},
    )
    chart.moved = any(v[n] for _, v in rows for n in SERIES)
    top = _nice_ceiling(max((abs(v[n]) for _, v in rows for n in SERIES), default=0), currency)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(rows), 1)
    bar_width = slot * 0.8 / len(SERIES)
    for index, (day, v) in enumerate(rows):
        for position, name in enumerate(SERIES):
            height = plot_height * abs(v[name]) / top
            chart.bars.append(
                Bar(
                    series=name,
                    x=round(LEFT + index * slot + slot * 0.1 + position * bar_width, 2),
                    y=round(chart.baseline - height, 2),
                    width=round(bar_width, 2),
                    height=round(height, 2),
                    title=f"{day.isoformat()}: {name} {format_amount(abs(v[name]), currency)} "
                    f"{currency}",
                )
            )
        if index % 7 == 0 or (index == len(rows) - 1 and index % 7 >= 3):
            chart.day_labels.append(
                DayLabel(round(LEFT + index * slot + slot / 2, 2), day.strftime("%-d %b"))
            )
    chart.ticks = [
        Tick(
            round(chart.baseline - plot_height * step / GRIDLINES, 2),
            format_amount(top * step // GRIDLINES, currency),
        )
        for step in range(GRIDLINES + 1)
    ]
    return chart


def _nice_ceiling(value: int, currency: str) -> int:
    """The top of the axis for ``value`` minor units: ``GRIDLINES`` steps of a round number
    of whole units (1, 2 or 5 times a power of ten), so every gridline's label is round."""
    unit = 10 ** exponent(currency)
    whole = max(1, -(-value // unit))
    needed = -(-whole // GRIDLINES)
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if factor * magnitude >= needed:
                return factor * magnitude * GRIDLINES * unit
        magnitude *= 10
