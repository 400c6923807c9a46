"""devstack.pg: where the local stack and the tests get their PostgreSQL database from."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from devstack.pg import ensure_database, find_postgres_binaries, server_url_for, start_private_cluster

NO_BINARIES = "no PostgreSQL binaries (initdb, pg_ctl, postgres) on PATH or under /usr/lib/postgresql"


def _fetchval(url: str, sql: str) -> object:
    async def run() -> object:
        connection = await asyncpg.connect(url, timeout=5)
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(run())


def _something_listens_on_5432() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
    except OSError:
        return False
    return True


def _exits_within(pid: int, seconds: float) -> bool:
    """Waits on a pidfd, which becomes readable once the process has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], seconds)
        return bool(readable)
    finally:
        os.close(pidfd)


def _postmaster_pid(url: str) -> int:
    data_directory = Path(str(_fetchval(url, "SHOW data_directory")))
    return int((data_directory / "postmaster.pid").read_text().split()[0])


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user can traverse, unlike pytest's tmp_path when running as root."""
    with tempfile.TemporaryDirectory(prefix="devstack-pg-test-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def test_database_url_from_the_environment_is_returned_untouched(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = "postgresql://someone:secret@db.example:6543/whatever?sslmode=require"
    monkeypatch.setenv("DATABASE_URL", url)
    lines: list[str] = []

    database = ensure_database(tmp_path, "selfserve", log=lines.append)
    database.stop()

    assert (database.url, database.source) == (url, "DATABASE_URL")
    assert lines == ["postgres: using DATABASE_URL from the environment as is"]
    assert not (tmp_path / ".run").exists()


def test_server_url_for_changes_only_the_database_name() -> None:
    assert server_url_for("postgresql://postgres@127.0.0.1:5432/postgres", "selfserve") == (
        "postgresql://postgres@127.0.0.1:5432/selfserve"
    )
    assert server_url_for("postgres://u:p@h:1/a?sslmode=disable", "b c") == ("postgres://u:p@h:1/b%20c?sslmode=disable")


@pytest.mark.skipif(not _something_listens_on_5432(), reason="no server on 127.0.0.1:5432")
def test_the_server_on_port_5432_is_used_and_the_named_database_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    name = f"devstack_test_{uuid.uuid4().hex[:12]}"
    lines: list[str] = []

    database = ensure_database(tmp_path, name, log=lines.append)
    try:
        assert database.source == "server on 127.0.0.1:5432"
        assert _fetchval(database.url, "SELECT current_database()") == name
        assert lines[-1] == f"postgres: created database {name} (server on 127.0.0.1:5432)"
        assert ensure_database(tmp_path, name, log=lines.append).url == database.url
        assert lines[-1] == f"postgres: found database {name} (server on 127.0.0.1:5432)"
    finally:
        _fetchval(server_url_for(database.url, "postgres"), f'DROP DATABASE IF EXISTS "{name}"')
        database.stop()
    assert not (tmp_path / ".run").exists()


@pytest.mark.skipif(not find_postgres_binaries(), reason=NO_BINARIES)
def test_a_private_cluster_answers_queries_and_stop_leaves_no_server_running(tmp_path: Path) -> None:
    lines: list[str] = []

    database = start_private_cluster(tmp_path / ".run" / "pg", find_postgres_binaries()[0], log=lines.append)
    try:
        assert _fetchval(database.url, "SELECT 1") == 1
        pid = _postmaster_pid(database.url)
    finally:
        database.stop()

    assert _exits_within(pid, seconds=30), f"postgres (pid {pid}) still running after stop()"
    assert any("started private cluster in" in line for line in lines), lines


@pytest.mark.skipif(not find_postgres_binaries(), reason=NO_BINARIES)
def test_a_stopped_private_cluster_is_restarted_with_its_data_on_the_next_run(open_folder: Path) -> None:
    folder = open_folder / ".run" / "pg"
    binaries = find_postgres_binaries()[0]

    first = start_private_cluster(folder, binaries, log=lambda line: None)
    try:
        _fetchval(first.url, "CREATE TABLE kept_between_runs (id int)")
    finally:
        first.stop()
    lines: list[str] = []
    second = start_private_cluster(folder, binaries, log=lines.append)
    try:
        assert _fetchval(second.url, "SELECT count(*) FROM kept_between_runs") == 0
        pid = _postmaster_pid(second.url)
    finally:
        second.stop()

    assert _exits_within(pid, seconds=30)
    assert second.source == f"private cluster in {folder}"
    assert not any("initializing" in line for line in lines), lines
