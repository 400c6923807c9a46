"""A client for product backends: gate checks answered in-process from one multiplexed
WatchEntitlements stream, with CheckGate when nothing fresh is held.

    from selfserve.client import EntitlementsClient

    async with EntitlementsClient("entitlements.internal:50051", token) as client:
        if await client.check("acct_1", "export"):
            ...

Needs only grpcio and protobuf (`pip install selfserve`)."""

from selfserve.client.blocking import BlockingEntitlementsClient
from selfserve.client.entitlements import MAX_ACCOUNTS_PER_STREAM, EntitlementsClient, Stats
from selfserve.client.options import RetryPolicy, Tls

__all__ = ["MAX_ACCOUNTS_PER_STREAM", "BlockingEntitlementsClient", "EntitlementsClient", "RetryPolicy", "Stats",
           "Tls"]
