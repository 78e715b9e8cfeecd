"""Processes the harness starts, and what /proc says about them.

Why this module exists: every number about memory and CPU comes from /proc, and every
process the harness starts must be stopped by its PID when the run ends (also on
Ctrl-C or an exception). Each child is started in its own session, so stopping it
means signalling its own process group (whose id is its PID) and nothing else.
"""

import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Procs:
    """A registry of started processes; `stop_all` ends each of them by PID."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.started = []  # (name, Popen)
        self.extra_pids = []  # (name, pid) started indirectly (e.g. Cutover's slots)

    def start(self, name, argv, cwd=None, env=None):
        log = open(os.path.join(self.logdir, f"{name}.log"), "ab")
        p = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append((name, p))
        return p

    def adopt(self, name, pid):
        """Remember a PID we caused to exist (stopped last, if still there)."""
        self.extra_pids.append((name, pid))

    def stop_all(self, grace=5.0):
        for _, p in reversed(self.started):
            if p.poll() is None:
                _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, p in reversed(self.started):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for _, pid in self.extra_pids:
            if pid_alive(pid):
                _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, pid in self.extra_pids:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                _signal_group(pid, signal.SIGKILL)
        self.started.clear()
        self.extra_pids.clear()


def _signal_group(pid, sig):
    """Signal the process group led by `pid` (our child's own session), else `pid`."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except ProcessLookupError:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def children(pid):
    """Direct children of `pid` (from /proc/*/stat)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def tree(pid, with_children):
    """The PIDs that make up one proxy: the process, plus its workers if asked."""
    return [pid] + (children(pid) if with_children else [])


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_split(pids):
    """(utime, stime) of `pids` in seconds: user space and kernel apart. Why both: on
    loopback most of a proxy's CPU is the kernel's TCP and its scheduler, and which of
    the two a difference is in says where to look."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user / CLK_TCK, system / CLK_TCK


def context_switches(pids):
    """Voluntary and involuntary context switches of every thread of `pids`, summed: a
    voluntary one is a thread that found no work and slept (a wake-up to come)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                pass
    return total


def machine_busy():
    """CPU seconds the whole machine spent busy (all CPUs: user, nice, system, irq,
    softirq; not idle, iowait or a hypervisor's steal), from /proc/stat. Why: on a
    machine where the load generator, the proxy and the backend share the cores, the
    proxy's share of what was spent says more than its req/s, which move with the
    machine's speed between rounds (BENCHMARKS.md, "What bounds plaintext throughput")."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields[:7])
    return (user + nice + system + irq + softirq) / CLK_TCK


def cpu_seconds(pids):
    """utime + stime of `pids` (each process's own, all its threads), in seconds."""
    return sum(cpu_split(pids))


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
