"""All SQL of the entitlement service, and the only place that imports asyncpg: one module per
aggregate, each taking and returning the frozen values of `domain/records.py` (or the domain's
own values). Query functions never open transactions; the use cases in `service/` own them."""
