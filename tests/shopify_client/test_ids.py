from __future__ import annotations

import pytest

from shopify_client.ids import gid, gid_kind, numeric_id


def test_gid_round_trip():
    assert gid("Customer", 42) == "gid://shopify/Customer/42"
    assert gid("StoreCreditAccount", "7") == "gid://shopify/StoreCreditAccount/7"
    assert numeric_id("gid://shopify/Customer/42") == 42
    assert numeric_id("gid://shopify/Customer/42", "Customer") == 42
    assert gid_kind("gid://shopify/OrderTransaction/9") == "OrderTransaction"


def test_a_query_string_on_a_gid_is_ignored():
    assert numeric_id("gid://shopify/InventoryLevel/12?inventory_item_id=3") == 12


@pytest.mark.parametrize(
    "value",
    [
        "42",
        "gid://shopify/Customer/",
        "gid://shopify/Customer/-1",
        "gid://shopify/Customer/0",
        "gid://shopify/Customer/4 2",
        "gid://shopify/Customer/42/extra",
        "gid://other/Customer/42",
        "gid://shopify/Customer/٤٢",  # Arabic-Indic digits pass str.isdigit()
    ],
)
def test_malformed_gids_are_refused(value):
    with pytest.raises(ValueError, match="GID|id"):
        numeric_id(value)


def test_the_kind_must_match_when_asked():
    with pytest.raises(ValueError, match="expected a Customer GID"):
        numeric_id("gid://shopify/Order/42", "Customer")


@pytest.mark.parametrize("bad", [0, -3, "abc", "", "1.5", True])
def test_gid_refuses_non_ids(bad):
    with pytest.raises(ValueError, match="not an id"):
        gid("Customer", bad)


def test_gid_refuses_a_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        gid("Cust/omer", 1)
