"""customers/update: the same as a create; an older change than the one held is stale."""

from webhooks.handlers.customers_create import handle

__all__ = ["handle"]
