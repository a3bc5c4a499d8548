"""``flame cluster up|down|status|env``: a real single-node SLURM on loopback, no systemd.

One node ``localhost`` in a ``debug`` partition, accounting through slurmdbd + MariaDB on
127.0.0.1 so ``sacct`` works (submitit polls job state with it). Daemons run as plain processes;
their PIDs are recorded in ``<state_dir>/run/`` and ``down`` stops only those. State, logs and
config live under the state dir (default ``~/.cache/flame/slurm``), never in the repository.
Settings follow the recipe in the project's notes (slurm-wlm 22.05 on Debian 12).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import ConfigError

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
DAEMONS = ("mysqld", "slurmdbd", "slurmctld", "slurmd")  # start order; stopped in reverse
MUNGE_PID = Path("/run/munge/munged.pid")
STATE_ENV = "FLAME_SLURM_DIR"


@dataclass(frozen=True)
class LocalCluster:
    """Where one local SLURM keeps its config, state, logs and PID files."""

    state_dir: Path
    """Root of everything the cluster writes."""
    db_port: int = 33306
    """MariaDB's TCP port on 127.0.0.1."""

    @property
    def slurm_conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    def pid_file(self, daemon: str) -> Path:
        return self.state_dir / "run" / f"{daemon}.pid"

    def env(self) -> dict[str, str]:
        """The environment a client (sbatch, sacct, submitit) needs to use this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.slurm_conf)}


def default_state_dir() -> Path:
    """``$FLAME_SLURM_DIR``, else ``$XDG_CACHE_HOME/flame/slurm`` (``~/.cache/flame/slurm``)."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "flame" / "slurm"


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def alive(cluster: LocalCluster, daemon: str) -> int | None:
    """The PID of ``daemon`` if it runs, else None."""
    return _pid(cluster.pid_file(daemon))


def node_state(cluster: LocalCluster) -> str:
    """``sinfo``'s state of the node (``idle``, ``mixed``, ...), or '' if unreachable."""
    if not cluster.slurm_conf.exists() or shutil.which("sinfo") is None:
        return ""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=cluster.env(),
                         capture_output=True, text=True, timeout=20)
    return out.stdout.strip() if out.returncode == 0 else ""


def is_up(cluster: LocalCluster) -> bool:
    """All daemons run and the node answers (idle, mixed or allocated)."""
    return all(alive(cluster, d) for d in DAEMONS) and node_state(cluster).rstrip("*") in (
        "idle", "mixed", "allocated", "completing")


def ensure_packages() -> None:
    """apt-install the Debian packages that are missing (``apt-get update`` first)."""
    missing = [p for p in PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    print(f"installing {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    # postinst says "policy-rc.d denied execution of start": harmless, we start daemons by hand.
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def slurm_conf_text(cluster: LocalCluster, cpus: int, mem_mb: int) -> str:
    s = cluster.state_dir
    return f"""\
# Written by `flame cluster up`: a single-node SLURM on loopback.
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# schedule every second: a submit->result round trip of ~1 s instead of ~2 s
SchedulerParameters=sched_interval=1,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
StateSaveLocation={s}/state
SlurmdSpoolDir={s}/spool
SlurmctldPidFile={cluster.pid_file('slurmctld')}
SlurmdPidFile={cluster.pid_file('slurmd')}
SlurmctldLogFile={s}/log/slurmctld.log
SlurmdLogFile={s}/log/slurmd.log
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
MaxArraySize=10001
MaxJobCount=20000
Waittime=0
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} \
State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def slurmdbd_conf_text(cluster: LocalCluster) -> str:
    return f"""\
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={cluster.db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile={cluster.pid_file('slurmdbd')}
LogFile={cluster.state_dir}/log/slurmdbd.log
"""


def _wait(check, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _ok(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    return subprocess.run(cmd, capture_output=True, env=env).returncode == 0


def start_munge(cluster: LocalCluster) -> None:
    """munged with Debian's key; its socket dir must exist (no systemd tmpfiles here)."""
    for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        shutil.chown(d, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists() or key.stat().st_size == 0:
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    if _pid(MUNGE_PID) is None:
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        # record that we started it, so `down` stops it and nothing else
        (cluster.state_dir / "run" / "munged.started").write_text(MUNGE_PID.read_text())
    _wait(lambda: _ok(["munge", "-n"]), "munged")


def start_mariadb(cluster: LocalCluster) -> None:
    """MariaDB with its own datadir and socket under the state dir, TCP on loopback only."""
    if alive(cluster, "mysqld"):
        return
    s = cluster.state_dir
    sock = s / "run" / "mysqld.sock"
    if not (s / "mysql" / "mysql").is_dir():
        (s / "mysql").mkdir(parents=True, exist_ok=True)
        with open(s / "log" / "mysql-install.log", "w") as log:
            subprocess.run(["mariadb-install-db", "--user=root", f"--datadir={s / 'mysql'}",
                            "--skip-test-db"], stdout=log, stderr=log, check=True)
    subprocess.Popen(
        ["mariadbd", "--user=root", f"--datadir={s / 'mysql'}", f"--socket={sock}",
         f"--port={cluster.db_port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
         f"--pid-file={cluster.pid_file('mysqld')}", f"--log-error={s / 'log' / 'mysqld.log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait(lambda: _ok(["mariadb", "-S", str(sock), "-e", "select 1"]), "MariaDB")
    subprocess.run(["mariadb", "-S", str(sock), "-e",
                    "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                    "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"],
                   check=True)
    _wait(lambda: alive(cluster, "mysqld") is not None, "MariaDB's PID file")


def up(cluster: LocalCluster) -> float:
    """Start whatever is not running; return the seconds it took. Idempotent."""
    t0 = time.monotonic()
    if is_up(cluster):
        return 0.0
    ensure_packages()
    for sub in ("state", "spool", "log", "run"):
        (cluster.state_dir / sub).mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
    cluster.slurm_conf.write_text(slurm_conf_text(cluster, cpus, mem_mb))
    dbd_conf = cluster.state_dir / "slurmdbd.conf"
    dbd_conf.write_text(slurmdbd_conf_text(cluster))
    dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read (it holds a password)
    env = cluster.env()
    start_munge(cluster)
    start_mariadb(cluster)
    if not alive(cluster, "slurmdbd"):
        subprocess.run(["slurmdbd"], env=env, check=True)  # finds slurmdbd.conf by SLURM_CONF
    _wait(lambda: _ok(["sacctmgr", "-n", "list", "cluster"], env), "slurmdbd")
    for daemon in ("slurmd", "slurmctld"):  # restart both so they read the config just written
        stop_daemon(cluster, daemon)
    # -c: a clean start that forgets old jobs; the cluster registers itself with slurmdbd
    subprocess.run(["slurmctld", "-c"], env=env, check=True)
    subprocess.run(["slurmd", "-N", "localhost"], env=env, check=True)
    _wait(lambda: node_state(cluster) == "idle", "the node to be idle in sinfo", 60)
    return time.monotonic() - t0


def stop_daemon(cluster: LocalCluster, daemon: str) -> bool:
    pid = alive(cluster, daemon)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pid(cluster.pid_file(daemon)) == pid:
        time.sleep(0.1)
        try:
            os.kill(pid, 0)
        except OSError:
            break
    return True


def down(cluster: LocalCluster) -> list[str]:
    """Stop the daemons this state dir started (munged only if we started it)."""
    stopped = [d for d in reversed(DAEMONS) if stop_daemon(cluster, d)]
    marker = cluster.state_dir / "run" / "munged.started"
    if marker.exists():
        pid = _pid(marker)
        if pid is not None and pid == _pid(MUNGE_PID):
            os.kill(pid, signal.SIGTERM)
            stopped.append("munged")
        marker.unlink()
    return stopped


def env_lines(cluster: LocalCluster) -> str:
    return f"export SLURM_CONF={cluster.slurm_conf}"


def cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("up", "down", "status", "env"),
                        help="up: start (idempotent); down: stop what up started; "
                             "status: daemons and node; env: the export line for a shell")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"config, state, logs, PIDs (default ${STATE_ENV} or "
                             "~/.cache/flame/slurm)")


def cluster_command(cfg: None, args: argparse.Namespace) -> int:
    """``flame cluster up|down|status|env``."""
    state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
    cluster = LocalCluster(state_dir)
    if args.action == "env":
        print(env_lines(cluster))
        return 0
    if args.action == "status":
        for d in DAEMONS:
            pid = alive(cluster, d)
            print(f"{d:<10} {'pid ' + str(pid) if pid else 'not running'}")
        state = node_state(cluster)
        print(f"node       {state or 'unreachable'}")
        print(env_lines(cluster))
        return 0 if is_up(cluster) else 1
    if args.action == "down":
        stopped = down(cluster)
        print(f"stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")
        return 0
    if os.geteuid() != 0:
        raise ConfigError("flame cluster up: runs the SLURM daemons as root; run it as root "
                          "(or use an existing cluster with cluster=slurm_h100)")
    try:
        took = up(cluster)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        raise ConfigError(f"the local SLURM did not come up: {err}; its logs are in "
                          f"{state_dir / 'log'} (`flame cluster down` stops what started)"
                          ) from None
    print("cluster already up" if took == 0 else f"cluster up in {took:.1f} s")
    print(env_lines(cluster), file=sys.stdout)
    return 0
