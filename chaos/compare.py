"""The services' answers beside the reference: every difference named, with what was expected and
what was found. Pure functions over plain values; `observe` in run.py does the asking."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chaos.reference import Binding, Entitled, Slot

# Kinds of difference. `lost` and `doubled` are the two the run exists to rule out.
LOST, DOUBLED, UNEXPECTED_FUNDING, WRONG_AMOUNT = "lost", "doubled", "funded without a payment", "wrong amount"
PLANS, GATES, BINDINGS, CHECK_GATE, PURCHASE, CONFLICT = (
    "plans", "gates", "grant bindings", "CheckGate", "purchase state", "conflict")


@dataclass(frozen=True)
class Difference:
    account_id: str
    where: str  # the replica (or "database" for what every replica reads alike)
    kind: str
    expected: str
    found: str

    def line(self) -> str:
        return f"{self.account_id} on {self.where}: {self.kind}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class Issued:
    """One row of an account's issued funding, as GetEntitlements lists it."""

    grant_program_code: str
    cadence: str  # per_period | one_time
    amount: int
    issue_key: str
    subscription_id: str
    invoice_id: str
    checkout_session_id: str
    period_end: int


def slot_of(row: Issued) -> Slot:
    """The reference's slot for an issued row: a per_period issue by its subscription, program and
    period end; a one-time one by the checkout session, invoice or subscription it keys on."""
    if row.cadence == "per_period":
        return ("period", row.subscription_id, row.grant_program_code, row.period_end)
    if row.checkout_session_id:
        return ("checkout", row.checkout_session_id, row.grant_program_code, 0)
    if row.subscription_id and row.issue_key.startswith(row.subscription_id + ":"):
        return ("subscription", row.subscription_id, row.grant_program_code, 0)
    return ("invoice", row.invoice_id, row.grant_program_code, 0)


def funding_differences(account_id: str, expected: Mapping[Slot, int], issued: Iterable[Issued]
                        ) -> list[Difference]:
    """Per slot: nothing or less than called for is `lost`; more than one issue, or more than called
    for, is `doubled`; an issue no payment calls for is `funded without a payment`."""
    totals: dict[Slot, tuple[int, int]] = {}
    for row in issued:
        amount, count = totals.get(slot_of(row), (0, 0))
        totals[slot_of(row)] = (amount + row.amount, count + 1)
    found: list[Difference] = []
    for slot in sorted(expected.keys() | totals.keys()):
        want = expected.get(slot, 0)
        amount, count = totals.get(slot, (0, 0))
        kind = (LOST if amount < want else DOUBLED if count > 1 or (want and amount > want)
                else UNEXPECTED_FUNDING if amount and not want else None)
        if kind is not None:
            found.append(Difference(account_id, "database", kind, f"{want} for {_slot(slot)}",
                                    f"{amount} in {count} issue(s)"))
    return found


def entitled_differences(account_id: str, where: str, expected: Entitled, found: Entitled, conflicts: int = 0
                         ) -> list[Difference]:
    """Plans in force, gate bundle and gates, grant bindings; any plan marked as a conflict (the run
    never buys two plans into one group)."""
    out = []
    if expected.plans != found.plans:
        out.append(Difference(account_id, where, PLANS, _plans(expected.plans), _plans(found.plans)))
    if (expected.gate_bundle, expected.gates) != (found.gate_bundle, found.gates):
        out.append(Difference(account_id, where, GATES, _gates(expected), _gates(found)))
    if expected.bindings != found.bindings:
        out.append(Difference(account_id, where, BINDINGS, _bindings(expected.bindings - found.bindings),
                              _bindings(found.bindings - expected.bindings)))
    if conflicts:
        out.append(Difference(account_id, where, CONFLICT, "no plan in conflict", f"{conflicts} in conflict"))
    return out


def check_gate_differences(account_id: str, where: str, expected_gates: frozenset[str],
                           answers: Mapping[str, bool]) -> list[Difference]:
    return [Difference(account_id, where, f"{CHECK_GATE} {gate}", str(gate in expected_gates), str(allowed))
            for gate, allowed in sorted(answers.items()) if allowed != (gate in expected_gates)]


def purchase_differences(account_id: str, expected: Mapping[str, str], found: Mapping[str, str]
                         ) -> list[Difference]:
    return [Difference(account_id, "database", PURCHASE, f"{purchase} {state}",
                       f"{purchase} {found.get(purchase, 'missing')}")
            for purchase, state in sorted(expected.items()) if found.get(purchase) != state]


def tally(differences: Iterable[Difference]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for difference in differences:
        counts[difference.kind] = counts.get(difference.kind, 0) + 1
    return counts


def _slot(slot: Slot) -> str:
    kind, owner, program, end = slot
    return f"{program} of {kind} {owner}" + (f" ending {end}" if end else "")


def _plans(plans: frozenset[tuple[str, str]]) -> str:
    return ", ".join(f"{plan} ({sub})" for sub, plan in sorted(plans)) or "none"


def _gates(entitled: Entitled) -> str:
    return f"{entitled.gate_bundle or 'no bundle'} [{', '.join(sorted(entitled.gates))}]"


def _bindings(bindings: Iterable[Binding]) -> str:
    return ", ".join(f"{b.grant_program_code} {b.total_amount} ({b.subscription_id} {b.price_id})"
                     for b in sorted(bindings, key=lambda b: (b.subscription_id, b.grant_program_code))) or "none"
