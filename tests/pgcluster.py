"""A throwaway PostgreSQL cluster for tests and benchmarks, from the binaries on the machine.

    cluster = PgCluster.find()            # None when no PostgreSQL server binaries exist
    cluster.start()                       # initdb into a temp dir, pg_ctl start on a free port
    dsn = cluster.create_database("t1")   # postgresql://postgres@127.0.0.1:<port>/t1
    cluster.stop(); cluster.start()       # same data, same port
    cluster.destroy()

PostgreSQL refuses to run as root: as root the cluster is owned by an existing unprivileged
user (``nobody``, else ``postgres``) and every server command runs through ``runuser``. The
cluster trusts loopback connections and only listens on 127.0.0.1 and its own socket dir.
``fsync`` is off: the tests kill memproxyd daemons and stop the server cleanly or with
``-m immediate`` (crash recovery from WAL), never the machine itself.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = ("PostgreSQL server binaries not found (initdb, pg_ctl): install them, e.g. "
                "`apt-get install postgresql`, or put `pg_config` of a server install on PATH")
SUPERUSER = "postgres"


def find_bindir() -> Path | None:
    """``$MEMPROXYD_TEST_PG_BINDIR`` (another server, e.g. one with pgvector), else
    ``pg_config --bindir`` when it holds initdb, else the newest /usr/lib/postgresql/N/bin."""
    candidates = [os.environ["MEMPROXYD_TEST_PG_BINDIR"]] if os.environ.get(
        "MEMPROXYD_TEST_PG_BINDIR") else []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit()
                         else 0, reverse=True)
    for folder in candidates:
        if all(os.access(Path(folder) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> str | None:
    """The unprivileged owner of the cluster when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", "postgres"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (nobody, postgres) exists")


def _as_user(name: str) -> list[str]:
    """A command prefix that runs the rest as ``name`` (we are root)."""
    if shutil.which("runuser"):
        return ["runuser", "-u", name, "--"]
    entry = pwd.getpwnam(name)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]


class PgCluster:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="memproxyd-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.running = False

    @classmethod
    def find(cls) -> "PgCluster | None":
        bindir = find_bindir()
        return cls(bindir) if bindir else None

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = _as_user(self.user) if self.user else []
        out = subprocess.run(prefix + list(args), cwd=self.root, capture_output=True, text=True,
                             timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr[-2000:]}"
                               f"\n{self.server_log()[-2000:]}")
        return out

    def start(self) -> "PgCluster":
        if not self.data.exists():
            os.chmod(self.root, 0o755)
            if self.user:
                entry = pwd.getpwnam(self.user)
                os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                      "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c full_page_writes=off -c shared_buffers=128MB -c max_connections=200")
        self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "-o", options, "start")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                      "stop", check=False)
            self.running = False

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run([str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v",
                              "ON_ERROR_STOP=1", "-d", self.dsn(database), "-c", sql],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def server_log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""
