"""Multi-worker ``lcron-tf train``: ``TF_CONFIG``, the strategy, and a local worker launcher.

Two ways to run on several workers (``tf.distribute.MultiWorkerMirroredStrategy``):

* **On one machine, to try it:** ``lcron-tf train ... --num-workers N`` with no
  ``TF_CONFIG`` in the environment. The command becomes a *launcher*. It picks N free ports
  on 127.0.0.1 and starts N worker processes. Each worker runs the same ``lcron-tf train``
  command with its own ``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type":
  "worker", "index": i}}``). The launcher prefixes every output line with ``[worker i]``.
  When a worker fails (or is killed), the launcher stops the other workers, and it can
  start the whole group again (``--max-restarts``), which resumes from the last
  checkpoint.

  TensorFlow's gRPC server always listens on every interface (``0.0.0.0``/``[::]``),
  whatever host ``TF_CONFIG`` names. So the launcher runs the workers in a private network
  namespace whose only interface is loopback (``unshare --net``, which needs root or
  unprivileged user namespaces): nothing outside the machine can reach their ports. When
  no namespace is possible, ``--worker-network auto`` (the default) warns and uses the host
  network; ``private`` refuses to start.

* **On a real cluster:** set ``TF_CONFIG`` on every host (the cluster manager usually does)
  and run the same ``lcron-tf train`` command on each. The process runs as that one worker.
  ``--num-workers`` can be left out; when it is given, it must equal the cluster's size.

The chief (the ``chief`` task, or worker 0 when there is none) writes the run directory:
config, state, progress, history, TensorBoard logs, the final weights, and
``BackupAndRestore``'s checkpoints in ``<run_dir>/backup/chief``. The other workers write
their checkpoint copies to ``<run_dir>/backup/workertemp_<i>``, which Keras deletes after
every save, and their final weights to a temporary folder that they delete. Every worker
reads ``backup/chief`` to resume, so the run directory must be on a filesystem that all
workers share (see ``docs/scale.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

LAUNCHED_ENV = "LCRON_TF_LAUNCH_ATTEMPT"
"""Set by the launcher in every worker's environment: 0 for the first start, then 1, 2, ..."""
NETNS_ENV = "LCRON_TF_PRIVATE_NETWORK"
"""Set when the launcher re-ran itself inside a private network namespace."""
NETWORKS = ("auto", "private", "host")
LAUNCH = "launch"
STOP_GRACE_S = 10.0


class ClusterError(RuntimeError):
    """A bad ``TF_CONFIG`` or worker setting (shown to the user without a traceback)."""


def _log(message: str) -> None:
    print(f"[lcron-tf launcher] {message}", flush=True)


# ----------------------------------------------------------------------------- TF_CONFIG


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster (from ``TF_CONFIG``).

    Attributes:
      addresses: ``host:port`` of every task, the chief first (when there is one).
      task_type: ``"chief"`` or ``"worker"``.
      task_index: index within its job.
      has_chief: whether the cluster has a ``chief`` job.
    """

    addresses: tuple[str, ...]
    task_type: str
    task_index: int
    has_chief: bool

    @property
    def num_workers(self) -> int:
        """Training processes in the cluster (the chief included)."""
        return len(self.addresses)

    @property
    def rank(self) -> int:
        """0 .. num_workers - 1; 0 is the chief."""
        if self.task_type == "chief":
            return 0
        return self.task_index + (1 if self.has_chief else 0)

    @property
    def is_chief(self) -> bool:
        """The task that writes the run directory."""
        return self.rank == 0


def read_tf_config(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The :class:`Cluster` of ``TF_CONFIG`` (None when it is not set).

    Raises:
      ClusterError: ``TF_CONFIG`` is not valid JSON, names parameter servers or an
        evaluator, or its task is not in its cluster.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        cluster, task = spec["cluster"], spec.get("task", {})
        task_type, task_index = str(task["type"]), int(task.get("index", 0))
    except (ValueError, KeyError, TypeError) as err:
        raise ClusterError(f"TF_CONFIG is not a valid cluster spec ({err!r}): {raw!r}") from None
    other = sorted(set(cluster) - {"chief", "worker"})
    if other:
        raise ClusterError(
            f"TF_CONFIG names {other} jobs: lcron-tf train runs MultiWorkerMirroredStrategy "
            "(jobs 'chief' and 'worker' only); ParameterServerStrategy is not supported "
            "(docs/scale.md explains why it is not needed at RecFlow's sizes)"
        )
    chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    if len(chiefs) > 1:
        raise ClusterError(f"TF_CONFIG has {len(chiefs)} chief tasks; at most one is allowed")
    jobs = {"chief": chiefs, "worker": workers}
    if task_type not in jobs or not 0 <= task_index < len(jobs[task_type]):
        raise ClusterError(
            f"TF_CONFIG task {task_type!r} index {task_index} is not in its cluster {cluster}"
        )
    return Cluster(tuple(chiefs + workers), task_type, task_index, bool(chiefs))


def resolve(num_workers: int | None, environ: Mapping[str, str] | None = None) -> Any:
    """How ``train`` runs: None (one process), a :class:`Cluster`, or :data:`LAUNCH`.

    Args:
      num_workers: ``--num-workers`` (None = not given).
      environ: the environment (default ``os.environ``).

    Raises:
      ClusterError: ``--num-workers`` disagrees with ``TF_CONFIG``, or is < 1.
    """
    environ = os.environ if environ is None else environ
    if num_workers is not None and num_workers < 1:
        raise ClusterError(f"--num-workers must be >= 1, got {num_workers}")
    cluster = read_tf_config(environ)
    if cluster is not None:
        if num_workers is not None and num_workers != cluster.num_workers:
            raise ClusterError(
                f"--num-workers {num_workers} but TF_CONFIG describes a cluster of "
                f"{cluster.num_workers} workers"
            )
        return None if cluster.num_workers == 1 else cluster
    if num_workers is None or num_workers == 1:
        return None
    if environ.get(LAUNCHED_ENV) is not None:
        raise ClusterError("a launched worker has no TF_CONFIG (internal error)")
    return LAUNCH


def launch_attempt(environ: Mapping[str, str] | None = None) -> int:
    """0 unless this worker was restarted by the launcher (then 1, 2, ...)."""
    return int((os.environ if environ is None else environ).get(LAUNCHED_ENV, "0") or 0)


def make_strategy() -> Any:
    """``MultiWorkerMirroredStrategy`` of ``TF_CONFIG``; create it before any other TF op."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def worker_tf_config(addresses: Sequence[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` in a cluster of ``addresses`` (no chief job)."""
    return json.dumps({"cluster": {"worker": list(addresses)},
                       "task": {"type": "worker", "index": index}})


# ----------------------------------------------------------------------------- launcher


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free on ``host`` now (bound to port 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def private_network_command() -> list[str] | None:
    """An ``unshare`` prefix that runs a command in a new network namespace, or None.

    Tries ``unshare --net`` (root) and ``unshare --user --map-root-user --net``.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    tries = [[unshare, "--user", "--map-root-user", "--net"]]
    if os.geteuid() == 0:
        tries.insert(0, [unshare, "--net"])
    for prefix in tries:
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    return None


def bring_loopback_up() -> None:
    """Set ``lo`` up (a new network namespace starts with it down)."""
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, siocgifflags, b"lo".ljust(40, b"\0"))
        flags = int.from_bytes(ifr[16:18], sys.byteorder) | iff_up
        fcntl.ioctl(s, siocsifflags, b"lo".ljust(16, b"\0") +
                    flags.to_bytes(2, sys.byteorder) + b"\0" * 22)


try:  # resolved here: the child must not load libraries between fork and exec
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGKILL when the launcher dies (prctl PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))


def _describe_exit(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-rc).name}"
        return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def _pump(stream: TextIO, prefix: str) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()
    stream.close()


@contextlib.contextmanager
def _terminate_on_signals() -> Iterator[None]:
    """SIGTERM raises SystemExit in the launcher, so ``finally`` blocks stop the workers."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every live worker, then SIGKILL the ones still alive after a grace period."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    deadline = time.time() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


def _run_group(argv: Sequence[str], num_workers: int, attempt: int) -> int:
    """Start ``num_workers`` workers, wait; on the first failure stop the rest. Returns rc."""
    addresses = [f"127.0.0.1:{p}" for p in free_ports(num_workers)]
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    try:
        for i in range(num_workers):
            env = {**os.environ, "TF_CONFIG": worker_tf_config(addresses, i),
                   LAUNCHED_ENV: str(attempt), "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                [sys.executable, "-m", "lcron_tf.cli", *argv], env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )
            procs.append(proc)
            _log(f"started worker {i} (pid {proc.pid}) on {addresses[i]}")
        # Output threads start after the last fork (preexec_fn and threads do not mix).
        for i, proc in enumerate(procs):
            pump = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}] "),
                                    daemon=True)
            pump.start()
            pumps.append(pump)
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, rc) for i, rc in enumerate(codes) if rc not in (None, 0)]
            if failed:
                i, rc = failed[0]
                _log(f"worker {i} {_describe_exit(rc)}; stopping the other workers")
                return rc if rc > 0 else 128 - rc
            if all(rc == 0 for rc in codes):
                return 0
            time.sleep(0.2)
    finally:
        _stop(procs)
        for pump in pumps:
            pump.join(timeout=5)


def launch(argv: Sequence[str], num_workers: int, *, max_restarts: int = 0,
           network: str = "auto") -> int:
    """Run ``lcron-tf <argv>`` as ``num_workers`` local workers; returns the exit status.

    Args:
      argv: the command line after ``lcron-tf`` (``train ... --num-workers N``).
      num_workers: workers to start (>= 2).
      max_restarts: times the whole group is started again after a worker failed; each
        restart resumes from the last checkpoint (``--fresh`` applies to the first start
        only).
      network: ``auto`` | ``private`` | ``host`` (see the module docstring).
    """
    if network not in NETWORKS:
        raise ClusterError(f"--worker-network must be one of {NETWORKS}, got {network!r}")
    if max_restarts < 0:
        raise ClusterError(f"--max-restarts must be >= 0, got {max_restarts}")
    inside = os.environ.get(NETNS_ENV) == "1"
    if not inside and network != "host":
        prefix = private_network_command()
        if prefix is not None:
            return _run_in_namespace(prefix, argv)
        if network == "private":
            raise ClusterError(
                "--worker-network private: cannot create a network namespace (needs the "
                "`unshare` tool and root or unprivileged user namespaces)"
            )
        _log("WARNING: no private network namespace available (unshare --net failed); "
             "TensorFlow's gRPC servers will listen on all interfaces of this machine")
    if inside:
        bring_loopback_up()
        _log("workers run in a private network namespace (loopback only)")
    with _terminate_on_signals():
        for attempt in range(max_restarts + 1):
            if attempt:
                _log(f"restart {attempt} of {max_restarts}: starting all {num_workers} "
                     "workers again (they resume from the last checkpoint)")
            rc = _run_group(argv, num_workers, attempt)
            if rc == 0:
                return 0
    _log("training did not finish; run the same command again to resume from the last "
         "checkpoint")
    return rc


def _run_in_namespace(prefix: Sequence[str], argv: Sequence[str]) -> int:
    env = {**os.environ, NETNS_ENV: "1"}
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "lcron_tf.cli", *argv], env=env,
                            preexec_fn=_die_with_parent)
    with _terminate_on_signals():
        try:
            return proc.wait()
        finally:
            _stop([proc])
