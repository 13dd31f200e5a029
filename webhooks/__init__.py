"""Shopify webhook intake: verify the HMAC of the raw body, record, enqueue, answer 200.

The intake route and the topic → handler table arrive with the Shopify edges issue; the
signature check they rely on is here.
"""
