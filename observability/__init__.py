"""Metrics, logs and database guards for on-call: what CreditCraft does, in numbers and lines.

``metrics`` (Prometheus, no Flask: the storefront, the jobs and the Shopify client count through
it), ``logs`` (JSON lines with request, shop and job context), ``database`` (slow-query log and
the web requests' statement timeout), ``web`` (the one ``init_observability`` call create_app
makes, and ``/metrics``), ``worker`` (the RQ worker's side), ``dashboard`` (rq-dashboard behind
HTTP basic auth). Nothing here imports Flask at package level.
"""
