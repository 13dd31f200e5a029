"""Every GraphQL document CreditCraft sends, one named constant each, with its operation name.

The tests validate each constant against Shopify's real Admin schema for SHOPIFY_API_VERSION
(``tests/shopify_client/test_documents.py``) and bound its requested cost. Costs below follow
Shopify's defaults (object 1, scalar/enum 0, connection or truncated list = 2 + first × node,
mutation 10); a single query may request at most 1000 points, and the bucket refills at 100
points/s on the Standard plan, so every document stays far below that.

Money comes back as Shopify's decimal strings (``MoneyV2.amount``), never as floats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

_OPERATION = re.compile(r"\s*(query|mutation)\s+([A-Za-z_][A-Za-z0-9_]*)\b")


@dataclass(frozen=True)
class Document:
    """A GraphQL document with exactly one named operation (read from its text)."""

    text: str
    operation: str = field(init=False)
    kind: Literal["query", "mutation"] = field(init=False)

    def __post_init__(self) -> None:
        match = _OPERATION.match(self.text)
        if match is None:
            raise ValueError("a document starts with `query Name` or `mutation Name`")
        object.__setattr__(self, "kind", match[1])
        object.__setattr__(self, "operation", match[2])

    def __str__(self) -> str:
        return self.text


# The shop's identity, currency and timezone (install, nightly checks). Cost 1.
SHOP = Document(
    """
query Shop {
  shop {
    id
    name
    currencyCode
    ianaTimezone
    myshopifyDomain
  }
}
"""
)

# The scopes the merchant actually granted (after install and app/scopes_update). Cost ~2.
APP_SCOPES = Document(
    """
query AppScopes {
  currentAppInstallation {
    accessScopes {
      handle
    }
  }
}
"""
)

# An order's payments and refunds, to find what was paid or refunded in store credit
# (gateway "shopify_store_credit"). Order.transactions lists every transaction of the order,
# refunds included (each with its parentTransaction); refunds[] groups them per refund, for the
# refund's id. Both are plain lists truncated at `first` (a result of exactly that length may be
# incomplete; reconciliation catches what a truncated read missed). Amounts are read in the
# presentment currency, the currency of the customer's store-credit account.
# Cost ≈ 2 + 25 × 4 (transactions) + 5 × (1 + 2 + 5 × 4) (refunds) = 217: an order webhook must
# stay cheap, since a Standard shop restores only 100 points a second.
ORDER_STORE_CREDIT = Document(
    """
query OrderStoreCredit($id: ID!) {
  order(id: $id) {
    id
    name
    customer {
      id
    }
    currencyCode
    presentmentCurrencyCode
    cancelledAt
    transactions(first: 25) {
      id
      kind
      status
      gateway
      amountSet {
        presentmentMoney { amount currencyCode }
      }
      parentTransaction { id kind gateway }
      createdAt
    }
    refunds(first: 5) {
      id
      createdAt
      transactions(first: 5) {
        nodes {
          id
          kind
          status
          gateway
          amountSet {
            presentmentMoney { amount currencyCode }
          }
          parentTransaction { id kind gateway }
        }
      }
    }
  }
}
"""
)

# A customer's native store-credit accounts (one per currency) with their balances.
# Variables: id (Customer GID), first (≤ 50 keeps the cost near 2 + 50 × 2), after (cursor).
CUSTOMER_STORE_CREDIT_ACCOUNTS = Document(
    """
query CustomerStoreCreditAccounts($id: ID!, $first: Int!, $after: String) {
  customer(id: $id) {
    id
    storeCreditAccounts(first: $first, after: $after) {
      nodes {
        id
        balance { amount currencyCode }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
)

# One account's transactions, newest first (reverse: true over CREATED_AT), one page.
# Variables: id (StoreCreditAccount GID), first (≤ 50: cost ≈ 3 + 2 + 50 × 5), after,
# query (Shopify search syntax, e.g. "type:credit" or "expires_at:<='2026-12-31T00:00:00Z'").
# Expiration transactions have no id of their own; they name the credit they expired.
STORE_CREDIT_TRANSACTIONS = Document(
    """
query StoreCreditTransactions($id: ID!, $first: Int!, $after: String, $query: String) {
  storeCreditAccount(id: $id) {
    id
    balance { amount currencyCode }
    transactions(first: $first, after: $after, reverse: true, query: $query) {
      nodes {
        __typename
        amount { amount currencyCode }
        balanceAfterTransaction { amount currencyCode }
        createdAt
        event
        origin {
          ... on OrderTransaction { id }
        }
        ... on StoreCreditAccountCreditTransaction {
          id
          expiresAt
          remainingAmount { amount currencyCode }
        }
        ... on StoreCreditAccountDebitTransaction {
          id
        }
        ... on StoreCreditAccountDebitRevertTransaction {
          id
          debitTransaction { id }
        }
        ... on StoreCreditAccountExpirationTransaction {
          creditTransaction { id }
        }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
)

# Reconciliation's read of one account: its balance and its transactions, newest first, each
# with what it needs to be matched to the ledger (the GID; for a transaction of an order, the
# order transaction and its order; for a credit, its expiry; for an expiration, the credit).
# Variables: id (StoreCreditAccount GID), first (≤ 50), after (cursor). Callers page back
# until they reach the account's watermark. Cost 1 + 1 + 2 + first × 5: 9 for a first page of
# one (an account with nothing new needs no more), 254 for a page of 50.
STORE_CREDIT_ACTIVITY = Document(
    """
query StoreCreditActivity($id: ID!, $first: Int!, $after: String) {
  storeCreditAccount(id: $id) {
    id
    balance { amount currencyCode }
    transactions(first: $first, after: $after, reverse: true) {
      nodes {
        __typename
        amount { amount currencyCode }
        createdAt
        event
        origin {
          ... on OrderTransaction {
            id
            order { id }
          }
        }
        ... on StoreCreditAccountCreditTransaction {
          id
          expiresAt
        }
        ... on StoreCreditAccountDebitTransaction {
          id
        }
        ... on StoreCreditAccountDebitRevertTransaction {
          id
        }
        ... on StoreCreditAccountExpirationTransaction {
          creditTransaction { id }
        }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
)

# Credit native store credit. Variables: id (Customer GID, which creates the account for the
# currency on first credit, or StoreCreditAccount GID) and creditInput {creditAmount {amount
# currencyCode}, expiresAt, notify}. userErrors codes: StoreCreditAccountCreditUserErrorCode.
STORE_CREDIT_CREDIT = Document(
    """
mutation StoreCreditCredit($id: ID!, $creditInput: StoreCreditAccountCreditInput!) {
  storeCreditAccountCredit(id: $id, creditInput: $creditInput) {
    storeCreditAccountTransaction {
      id
      amount { amount currencyCode }
      expiresAt
      balanceAfterTransaction { amount currencyCode }
      createdAt
      account { id }
    }
    userErrors { code field message }
  }
}
"""
)

# Debit native store credit (Shopify spends the credits expiring soonest first). Variables: id
# (account or Customer GID) and debitInput {debitAmount {amount currencyCode}}.
STORE_CREDIT_DEBIT = Document(
    """
mutation StoreCreditDebit($id: ID!, $debitInput: StoreCreditAccountDebitInput!) {
  storeCreditAccountDebit(id: $id, debitInput: $debitInput) {
    storeCreditAccountTransaction {
      id
      amount { amount currencyCode }
      balanceAfterTransaction { amount currencyCode }
      createdAt
      account { id }
    }
    userErrors { code field message }
  }
}
"""
)

ALL: tuple[Document, ...] = (
    SHOP,
    APP_SCOPES,
    ORDER_STORE_CREDIT,
    CUSTOMER_STORE_CREDIT_ACCOUNTS,
    STORE_CREDIT_TRANSACTIONS,
    STORE_CREDIT_ACTIVITY,
    STORE_CREDIT_CREDIT,
    STORE_CREDIT_DEBIT,
)
