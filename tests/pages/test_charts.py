"""The Dashboard's chart, laid out on the server: bars in proportion, round axis labels."""

from __future__ import annotations

import pytest

from blueprints.charts import HEIGHT, activity_charts


def day(date: str, currency: str, issued: str, redeemed: str = "0", expired: str = "0") -> dict:
    return {
        "date": date,
        "currency": currency,
        "issued": issued,
        "redeemed": redeemed,
        "expired": expired,
    }


@pytest.mark.smoke
def test_every_day_of_the_period_gets_three_bars_in_proportion_to_its_amounts():
    activity = {
        "from": "2026-11-01",
        "to": "2026-11-30",
        "days": [
            day("2026-11-02", "USD", "40.00", "10.00"),
            day("2026-11-30", "USD", "0", "0", "20.00"),
        ],
    }

    (chart,) = activity_charts(activity)

    assert chart.currency == "USD"
    assert chart.moved
    assert len(chart.days) == 30  # zero-filled
    assert len(chart.bars) == 90
    heights = {(b.title.split(":")[0], b.series): b.height for b in chart.bars}
    issued, redeemed = heights[("2026-11-02", "issued")], heights[("2026-11-02", "redeemed")]
    assert issued == pytest.approx(4 * redeemed)
    assert heights[("2026-11-30", "expired")] == pytest.approx(2 * redeemed)
    assert heights[("2026-11-15", "issued")] == 0
    assert [t.label for t in chart.ticks] == ["0.00", "10.00", "20.00", "30.00", "40.00"]
    for bar in chart.bars:
        assert 0 <= bar.y <= HEIGHT
        assert bar.y + bar.height == pytest.approx(chart.baseline)
    assert chart.totals == {"issued": "40.00", "redeemed": "10.00", "expired": "20.00"}
    assert chart.day_labels[0].label == "1 Nov"


@pytest.mark.smoke
def test_one_chart_per_currency_with_its_own_scale_and_none_without_activity():
    activity = {
        "from": "2026-11-01",
        "to": "2026-11-02",
        "days": [
            day("2026-11-01", "JPY", "1234"),
            day("2026-11-01", "USD", "0.00"),
            day("2026-11-02", "USD", "0.00"),
        ],
    }

    jpy, usd = activity_charts(activity)

    assert jpy.currency == "JPY"
    assert jpy.ticks[-1].label == "2000"  # the next round amount, in whole yen
    assert not usd.moved
    assert activity_charts({"from": "2026-11-01", "to": "2026-11-02", "days": []}) == []
