"""orders/create: sync the order's store credit (only orders paid partly with store credit)."""

from webhooks.handlers._orders import sync_from_order_payload as handle

__all__ = ["handle"]
