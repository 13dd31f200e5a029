"""Idempotency-Key at the API, the way Stripe does it: a retry gets the first answer."""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_error, row_counts

CUSTOMER = 7408348290
CREDITS = f"/api/customers/{CUSTOMER}/credits"
DEBITS = f"/api/customers/{CUSTOMER}/debits"
BODY = {"amount": "10.00", "currency": "USD", "reason": "goodwill", "note": "sorry"}


def test_a_retry_with_the_same_key_and_body_replays_the_first_response(api, shop):
    first = api.post(CREDITS, BODY, key="retry-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers

    for _ in range(2):
        again = api.post(CREDITS, dict(reversed(BODY.items())), key="retry-1")
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.get_json() == first.get_json()

    counts = row_counts(shop.id)
    assert (counts["ledger_entries"], counts["credit_lots"], counts["idempotency_keys"]) == (
        1,
        1,
        1,
    )
    assert counts["audit_log"] == 1
    balances = api.get(f"/api/customers/{CUSTOMER}").get_json()["customer"]["balances"]
    assert balances == [{"currency": "USD", "amount": "10.00"}]


def test_without_a_key_every_request_is_a_new_one(api, shop):
    assert api.post(CREDITS, BODY).status_code == 201
    assert api.post(CREDITS, BODY).status_code == 201
    counts = row_counts(shop.id)
    assert (counts["ledger_entries"], counts["idempotency_keys"]) == (2, 0)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CREDITS, BODY | {"amount": "10.01"}),
        (CREDITS, BODY | {"currency": "EUR"}),
        (CREDITS, BODY | {"note": "another note"}),
        (CREDITS, BODY | {"reason": "another reason"}),
        (CREDITS, BODY | {"expires_at": "2099-01-01T00:00:00Z"}),
        (f"/api/customers/{CUSTOMER + 1}/credits", BODY),
        (DEBITS, {"amount": "1.00", "currency": "USD", "reason": "goodwill"}),
    ],
    ids=["amount", "currency", "note", "reason", "expiry", "customer", "operation"],
)
def test_the_same_key_for_a_different_request_is_a_409_that_writes_nothing(api, shop, path, body):
    first = api.post(CREDITS, BODY, key="reused")
    assert first.status_code == 201
    before = row_counts(shop.id)

    error = assert_error(api.post(path, body, key="reused"), 409, "idempotency_conflict")
    assert error["details"] == {"key": "reused"}
    after = row_counts(shop.id)
    assert {k: after[k] - before[k] for k in before if after[k] != before[k]} in (
        {},
        {"audit_log": 1},  # the conflict is audited as a failed attempt, nothing else
    )
    # The first response is still what the key answers.
    replay = api.post(CREDITS, BODY, key="reused")
    assert (replay.status_code, replay.get_json()) == (201, first.get_json())


def test_a_refused_debit_replays_as_refused_after_a_top_up(api, shop):
    api.credit(CUSTOMER, "1.00")
    debit = {"amount": "5.00", "currency": "USD", "reason": "correction"}
    refused = api.post(DEBITS, debit, key="debit-1")
    assert_error(refused, 422, "insufficient_funds")

    api.credit(CUSTOMER, "10.00")
    replay = api.post(DEBITS, debit, key="debit-1")
    assert_error(replay, 422, "insufficient_funds")
    assert replay.get_json() == refused.get_json()

    balances = api.get(f"/api/customers/{CUSTOMER}").get_json()["customer"]["balances"]
    assert balances == [{"currency": "USD", "amount": "11.00"}]
    assert row_counts(shop.id)["ledger_entries"] == 2
    # A new key is a new request, and now there is enough.
    assert api.post(DEBITS, debit, key="debit-2").status_code == 201


def test_a_revoke_replays_its_receipt_rather_than_lot_not_active(api, shop):
    lot = api.credit(CUSTOMER, "3.00")["lot"]["id"]
    first = api.post(f"/api/lots/{lot}/revoke", {"reason": "mistake"}, key="revoke-1")
    again = api.post(f"/api/lots/{lot}/revoke", {"reason": "mistake"}, key="revoke-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert row_counts(shop.id)["ledger_entries"] == 2


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "has space", " leading", "tab\there", "ünïcode", "semi;colon", ""],
    ids=["too_long", "space", "leading_space", "tab", "non_ascii", "semicolon", "empty"],
)
def test_an_invalid_key_is_400_and_writes_nothing(api, shop, key):
    headers = api.headers() | {"Idempotency-Key": key}
    response = api.client.post(CREDITS, json=BODY, headers=headers)
    assert_error(response, 400, "invalid_idempotency_key")
    assert set(row_counts(shop.id).values()) == {0}


def test_the_longest_key_and_every_allowed_character_work(api):
    for key in ("k" * 255, "aZ09-_.:~/+="):
        assert api.post(CREDITS, BODY, key=key).status_code == 201
        assert api.post(CREDITS, BODY, key=key).headers["Idempotent-Replayed"] == "true"


def test_keys_are_scoped_per_shop(api, other_api, shop, other_shop):
    ours = api.post(CREDITS, BODY, key="shared-key")
    theirs = other_api.post(CREDITS, BODY, key="shared-key")
    assert (ours.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers
    assert ours.get_json()["entry"]["id"] != theirs.get_json()["entry"]["id"]
    for shop_id in (shop.id, other_shop.id):
        counts = row_counts(shop_id)
        assert (counts["ledger_entries"], counts["idempotency_keys"]) == (1, 1)
    # And another shop's different body under the same key is no conflict either.
    other = other_api.post(CREDITS, BODY | {"amount": "99.00"}, key="shared-key-2")
    mine = api.post(CREDITS, BODY, key="shared-key-2")
    assert (other.status_code, mine.status_code) == (201, 201)


def test_a_request_refused_at_the_edge_leaves_the_key_free(api, shop):
    bad = api.post(CREDITS, BODY | {"amount": "10.001"}, key="fix-and-retry")
    assert_error(bad, 422, "invalid_amount")
    assert row_counts(shop.id)["idempotency_keys"] == 0
    good = api.post(CREDITS, BODY, key="fix-and-retry")
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good.headers
