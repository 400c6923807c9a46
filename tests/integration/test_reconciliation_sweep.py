"""The reconciler's side of the entitlement service: the accounts a page at a time after a saved
sweep position, accounts it could not read recorded as such, and a lease that lets one checkout
replica reconcile at a time."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support.provider import T0
from tests.support.waiting import eventually

ACCOUNTS = [f"acct_{n}" for n in range(1, 6)]


async def link_accounts(service: Client) -> None:
    for account in ACCOUNTS:
        await service.checkout.LinkProviderCustomer(pb.LinkProviderCustomerRequest(
            account_id=account, provider_customer_id=account.replace("acct", "cus")))


async def page(service: Client, size: int) -> pb.GetReconcileStateResponse:
    return await service.checkout.GetReconcileState(pb.GetReconcileStateRequest(page_size=size))


async def apply(service: Client, *accounts: pb.ProviderAccountState, position: str | None = None,
                ) -> pb.ApplyReconciliationResponse:
    request = pb.ApplyReconciliationRequest(read_at=Timestamp(seconds=int(T0.timestamp())), accounts=accounts,
                                            sweep_position=position)
    return await service.checkout.ApplyReconciliation(request)


def ids(state: pb.GetReconcileStateResponse) -> list[str]:
    return [a.account_id for a in state.accounts]


async def test_the_sweep_pages_through_every_account_and_resumes_at_the_page_it_stopped_on(service: Client) -> None:
    await link_accounts(service)
    first = await page(service, 2)
    assert (ids(first), first.sweep_started_after, first.sweep_position) == (ACCOUNTS[:2], "", "acct_2")
    assert ids(await page(service, 2)) == ACCOUNTS[:2]  # nothing saved yet: the same page again
    await apply(service, position=first.sweep_position)
    second = await page(service, 2)
    assert (ids(second), second.sweep_started_after, second.sweep_position) == (ACCOUNTS[2:4], "acct_2", "acct_4")
    await apply(service)  # no position given: the saved one stays
    assert ids(await page(service, 2)) == ACCOUNTS[2:4]
    await apply(service, position=second.sweep_position)
    last = await page(service, 2)
    assert (ids(last), last.sweep_position) == (ACCOUNTS[4:], "")  # a short page ends the sweep
    await apply(service, position=last.sweep_position)
    assert ids(await page(service, 2)) == ACCOUNTS[:2]  # and the next one starts again


async def test_one_account_asked_for_is_not_a_page_of_the_sweep(service: Client) -> None:
    await link_accounts(service)
    state = await service.checkout.GetReconcileState(pb.GetReconcileStateRequest(account_id="acct_3", page_size=1))
    assert (ids(state), state.sweep_position) == (["acct_3"], "")


async def test_an_account_the_reconciler_could_not_read_is_recorded_until_it_is_read(service: Client) -> None:
    await link_accounts(service)
    unreadable = pb.ProviderAccountState(account_id="acct_1", provider_customer_id="cus_1",
                                         unreadable="subscription sub_9 has unknown status 'frozen'")
    for _ in range(2):
        reply = await apply(service, unreadable)
        assert (reply.accounts_unreadable, reply.mismatches_found) == (1, 1)
    [open_one] = [m for m in reply.open_mismatches if m.account_id == "acct_1"]
    assert open_one.kind == "unreadable" and "frozen" in open_one.diff
    read = await apply(service, pb.ProviderAccountState(account_id="acct_1", provider_customer_id="cus_1"))
    assert read.accounts_unreadable == 0
    assert not [m for m in read.open_mismatches if m.account_id == "acct_1"]
    closed = await service.as_role(Role.SUPPORT).ListMismatches(pb.ListMismatchesRequest(include_closed=True))
    assert [(m.kind, m.resolution) for m in closed.mismatches] == [("unreadable", "read from the provider again")]


def lease(holder: str, seconds: int) -> pb.LeaseReconcilerRequest:
    return pb.LeaseReconcilerRequest(holder=holder, ttl=Duration(seconds=seconds))


async def test_one_holder_at_a_time_holds_the_reconciler_lease(service: Client) -> None:
    take = service.checkout.LeaseReconciler
    first = await take(lease("replica-a", 60))
    assert first.granted and first.holder == "replica-a"
    refused = await take(lease("replica-b", 60))
    assert not refused.granted and refused.holder == "replica-a"
    assert refused.expires_at == first.expires_at
    renewed = await take(lease("replica-a", 120))
    assert renewed.granted and renewed.expires_at.ToDatetime() > first.expires_at.ToDatetime()
    released = await take(lease("replica-a", 0))
    assert not released.granted and released.holder == ""
    assert (await take(lease("replica-b", 1))).granted


async def test_a_lease_not_renewed_lapses(service: Client) -> None:
    take = service.checkout.LeaseReconciler
    assert (await take(lease("replica-a", 1))).granted

    async def taken_over() -> bool:
        return (await take(lease("replica-b", 60))).granted

    await eventually(taken_over, timeout_s=5, what="the lease to lapse")
