"""A PostgreSQL database for the local stack and the tests, with no configuration.

Sources, first usable wins: `DATABASE_URL`; a server answering on 127.0.0.1:5432 (trust auth as
`postgres` or `root`); a private cluster under `<repo>/.run/pg` built from the machine's PostgreSQL
binaries; the same built from the binaries of the `pgserver` wheel, under `<repo>/.run/pgserver`.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg

Log = Callable[[str], None]

HOST = "127.0.0.1"
DEFAULT_PORT = 5432
SUPERUSER = "postgres"
PROBE_USERS = ("postgres", "root")
TOOLS = ("initdb", "pg_ctl", "postgres")
# sun_path is 108 bytes on Linux and 104 on macOS, terminating NUL included.
MAX_SOCKET_PATH = 103


@dataclass(frozen=True)
class Database:
    url: str
    source: str
    stop: Callable[[], None]


def _leave_running() -> None:
    """The server was not started by this call, so it is not ours to stop."""


def ensure_database(repo_root: Path, name: str, *, log: Log = print) -> Database:
    """Database `name` on the first available server (see the module docstring), created if missing."""
    url = os.environ.get("DATABASE_URL")
    if url:
        log("postgres: using DATABASE_URL from the environment as is")
        return Database(url, "DATABASE_URL", _leave_running)
    log("postgres: DATABASE_URL is not set")
    server = _server_on_default_port(log) or _start_own_server(repo_root / ".run", log)
    try:
        created = asyncio.run(_create_database(server.url, name))
    except BaseException:
        server.stop()
        raise
    log(f"postgres: {'created' if created else 'found'} database {name} ({server.source})")
    return replace(server, url=server_url_for(server.url, name))


def server_url_for(url: str, dbname: str) -> str:
    """The same server, user and options as `url`, for database `dbname`."""
    return urlsplit(url)._replace(path="/" + quote(dbname, safe="")).geturl()


def find_postgres_binaries() -> list[Path]:
    """Directories holding initdb, pg_ctl and postgres, from PATH or /usr/lib/postgresql, newest first."""
    candidates = [Path(found).resolve().parent for found in map(shutil.which, TOOLS) if found]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    unique = [d for i, d in enumerate(candidates) if d not in candidates[:i] and _has_tools(d)]
    return sorted(unique, key=_version, reverse=True)


def start_private_cluster(folder: Path, bin_dir: Path, *, log: Log = print, kind: str = "private cluster") -> Database:
    """Starts the trust-auth cluster in `folder` (initializing it first if needed) on a free port."""
    user = _unprivileged_user() if os.geteuid() == 0 else None
    folder, temporary = _usable_folder(folder, bin_dir, user, log)
    cluster = _Cluster(folder, bin_dir, user)
    runs_as = f" as user {user.pw_name}" if user else ""
    if not (cluster.data / "PG_VERSION").exists():
        log(f"postgres: initializing a new cluster in {cluster.data} with {bin_dir}{runs_as}")
        cluster.initdb()
    port = cluster.running_port()
    if port is not None:
        log(f"postgres: re-using {kind} already running in {folder} on port {port}; left running")
        stop = _leave_running
    else:
        port = cluster.start(log)
        log(f"postgres: started {kind} in {folder} on {HOST}:{port}{runs_as}")
        stop = partial(_stop, cluster, temporary, log)
    return Database(f"postgresql://{SUPERUSER}@{HOST}:{port}/postgres", f"{kind} in {folder}", stop)


async def _fetchval(url: str, sql: str, *args: object) -> object:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def _create_database(server_url: str, name: str) -> bool:
    if await _fetchval(server_url, "SELECT 1 FROM pg_database WHERE datname = $1", name):
        return False
    identifier = '"' + name.replace('"', '""') + '"'
    try:
        await _fetchval(server_url, f"CREATE DATABASE {identifier}")
    except asyncpg.DuplicateDatabaseError:
        return False  # another process created it between the check and the CREATE
    return True


def _server_on_default_port(log: Log) -> Database | None:
    where = f"{HOST}:{DEFAULT_PORT}"
    try:
        socket.create_connection((HOST, DEFAULT_PORT), timeout=0.5).close()
    except OSError as error:
        log(f"postgres: no server on {where} ({error.strerror or error})")
        return None
    for user in PROBE_USERS:
        url = f"postgresql://{user}@{where}/postgres"
        try:
            asyncio.run(_fetchval(url, "SELECT 1"))
        except Exception as error:  # any failure means "not usable", and the reason is logged
            log(f"postgres: the server on {where} refused user {user}: {error}")
            continue
        log(f"postgres: using the server on {where} as user {user}")
        return Database(url, f"server on {where}", _leave_running)
    return None


def _start_own_server(run_dir: Path, log: Log) -> Database:
    binaries = find_postgres_binaries()
    if binaries:
        folder = run_dir / "pg"
        return start_private_cluster(folder, _matching_binaries(binaries, folder), log=log)
    log("postgres: no PostgreSQL binaries on PATH or under /usr/lib/postgresql; using the pgserver wheel")
    return start_private_cluster(run_dir / "pgserver", _pgserver_binaries(log), log=log, kind="pgserver")


def _matching_binaries(binaries: list[Path], folder: Path) -> Path:
    """The newest binaries, or for an existing cluster those of the version that made it."""
    version_file = folder / "data" / "PG_VERSION"
    if not version_file.exists():
        return binaries[0]
    major = int(version_file.read_text().strip())
    for bin_dir in binaries:
        if _version(bin_dir)[:1] == (major,):
            return bin_dir
    raise RuntimeError(
        f"the cluster in {folder} was made by PostgreSQL {major} and only other versions are"
        f" installed ({', '.join(map(str, binaries))}); delete {folder} to start afresh"
    )


def _pgserver_binaries(log: Log) -> Path:
    """The wheel's own PostgreSQL build, run like the private cluster (TCP, trust auth, stop()).

    Located rather than imported: importing pgserver pulls in psutil and fasteners, and warns
    when XDG_RUNTIME_DIR is unset, none of which the binaries need.
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None:
        log(f"postgres: installing pgserver into {sys.prefix} (pip install pgserver)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "pgserver"], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("pgserver")
    locations = list(spec.submodule_search_locations or []) if spec else []
    bin_dir = Path(*locations[:1], "pginstall", "bin")
    if not locations or not _has_tools(bin_dir):
        raise RuntimeError(f"pgserver is installed but holds no PostgreSQL binaries at {bin_dir}")
    return bin_dir


def _has_tools(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / tool, os.X_OK) for tool in TOOLS)


def _version(bin_dir: Path) -> tuple[int, ...]:
    result = subprocess.run([bin_dir / "pg_ctl", "--version"], capture_output=True, text=True)
    match = re.search(r"(\d+)(?:\.(\d+))?", result.stdout)
    return tuple(int(part) for part in match.groups() if part) if match else ()


def _unprivileged_user() -> pwd.struct_passwd:
    """PostgreSQL refuses to run as root, so a root caller runs it as one of these."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and no 'postgres' or 'nobody' user to run PostgreSQL as")


def _usable_folder(folder: Path, bin_dir: Path, user: pwd.struct_passwd | None, log: Log) -> tuple[Path, bool]:
    """`folder`, or a temporary one (True) when `user` could not reach it; owned by `user`."""
    folder.mkdir(parents=True, exist_ok=True)
    if user is None:
        return folder, False
    blocked = _closed_directory(bin_dir / "pg_ctl", user)
    if blocked is not None:
        raise RuntimeError(f"user {user.pw_name} cannot reach {bin_dir}: {blocked} is closed to it")
    blocked = _closed_directory(folder, user)
    if blocked is None:
        if folder.stat().st_uid != user.pw_uid:
            _chown_tree(folder, user)
        return folder, False
    temporary = Path(tempfile.mkdtemp(prefix="selfserve-pg-", dir="/tmp"))
    os.chown(temporary, user.pw_uid, user.pw_gid)
    log(
        f"postgres: {blocked} (mode {stat.filemode(blocked.stat().st_mode)}) is closed to user"
        f" {user.pw_name}, so the cluster goes in {temporary} instead, removed on stop"
    )
    return temporary, True


def _closed_directory(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory above `path` that `user` may not enter, if any."""
    groups = os.getgrouplist(user.pw_name, user.pw_gid)
    for directory in reversed(path.resolve().parents):
        info = directory.stat()
        owner, group = info.st_uid == user.pw_uid, info.st_gid in groups
        bit = stat.S_IXUSR if owner else stat.S_IXGRP if group else stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None


def _chown_tree(folder: Path, user: pwd.struct_passwd) -> None:
    os.chown(folder, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _as_user(user: pwd.struct_passwd) -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
    if runuser := shutil.which("runuser", path=search):
        return [runuser, "-u", user.pw_name, "--"]
    if setpriv := shutil.which("setpriv", path=search):
        return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
    raise RuntimeError("running as root needs runuser or setpriv to start PostgreSQL as another user")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class _Cluster:
    folder: Path
    bin_dir: Path
    user: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self.user is not None:
            command = _as_user(self.user) + command
        # The working directory must be one the unprivileged user can enter.
        return subprocess.run(command, cwd=self.folder, capture_output=True, text=True)

    def checked(self, tool: str, *args: str) -> None:
        result = self.run(tool, *args)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {args[0]} failed in {self.folder}:\n{result.stderr}{result.stdout}")

    def initdb(self) -> None:
        options = ["--auth=trust", f"--username={SUPERUSER}", "--encoding=UTF8", "--no-locale"]
        self.checked("initdb", "--pgdata", str(self.data), *options)

    def running_port(self) -> int | None:
        if self.run("pg_ctl", "status", "-D", str(self.data)).returncode != 0:
            return None
        return int((self.data / "postmaster.pid").read_text().splitlines()[3])

    def start(self, log: Log) -> int:
        port = _free_port()
        sockets = str(self.folder)
        if len(f"{sockets}/.s.PGSQL.{port}") > MAX_SOCKET_PATH:
            log(f"postgres: {sockets} is too long a path for a unix socket; TCP only")
            sockets = ""
        options = f"-h {HOST} -p {port} -k {shlex.quote(sockets)}"
        server_log = self.folder / "postgres.log"
        try:
            self.checked(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(server_log), "-o", options
            )
        except RuntimeError as error:
            tail = server_log.read_text(errors="replace").splitlines()[-20:] if server_log.exists() else []
            raise RuntimeError(f"{error}\nlast lines of {server_log}:\n" + "\n".join(tail)) from None
        return port


def _stop(cluster: _Cluster, temporary: bool, log: Log) -> None:
    if (cluster.data / "postmaster.pid").exists():
        cluster.checked("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(cluster.data))
        log(f"postgres: stopped the cluster in {cluster.folder}")
    if temporary:
        shutil.rmtree(cluster.folder, ignore_errors=True)
