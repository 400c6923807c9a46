"""A database fault is a transient error for the caller, never an internal one: a restart, a
failover or a cut connection answers UNAVAILABLE; a transaction rolled back by a deadlock or a
serialization failure answers ABORTED; both are safe to retry."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from entitlement_service.db.pool import RETRYABLE
from entitlement_service.grpc.errors import ERRORS


@pytest.mark.parametrize(("fault", "code"), [
    (asyncpg.AdminShutdownError("terminating connection due to administrator command"), grpc.StatusCode.UNAVAILABLE),
    (asyncpg.CrashShutdownError("the database system is in recovery mode"), grpc.StatusCode.UNAVAILABLE),
    (asyncpg.CannotConnectNowError("the database system is starting up"), grpc.StatusCode.UNAVAILABLE),
    (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
     grpc.StatusCode.UNAVAILABLE),
    (asyncpg.InterfaceError("connection is closed"), grpc.StatusCode.UNAVAILABLE),
    (ConnectionResetError("Connection reset by peer"), grpc.StatusCode.UNAVAILABLE),
    (asyncpg.DeadlockDetectedError("deadlock detected"), grpc.StatusCode.ABORTED),
    (asyncpg.SerializationError("could not serialize access"), grpc.StatusCode.ABORTED),
    (asyncpg.TooManyConnectionsError("too many clients"), grpc.StatusCode.RESOURCE_EXHAUSTED),
], ids=["restart", "crash recovery", "starting up", "connection gone", "connection closed", "reset by peer",
        "deadlock", "serialization failure", "too many connections"])
def test_a_database_fault_answers_a_status_the_caller_can_retry(fault: Exception, code: grpc.StatusCode) -> None:
    assert ERRORS.status_for(fault) == code


@pytest.mark.parametrize("fault", [asyncpg.AdminShutdownError("x"), asyncpg.DeadlockDetectedError("x"),
                                   asyncpg.ConnectionDoesNotExistError("x")])
def test_the_faults_a_transaction_is_retried_on_are_the_transient_ones(fault: Exception) -> None:
    assert isinstance(fault, RETRYABLE)


@pytest.mark.parametrize("fault", [asyncpg.UniqueViolationError("x"), asyncpg.CheckViolationError("x"),
                                   asyncpg.UndefinedTableError("x")])
def test_a_broken_rule_or_a_bug_is_never_retried(fault: Exception) -> None:
    assert not isinstance(fault, RETRYABLE)
    assert ERRORS.status_for(fault) is None  # INTERNAL, logged with its traceback
