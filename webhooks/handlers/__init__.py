"""One module per webhook topic; ``webhooks.topics.handlers()`` is the table."""
