"""What the figures were measured on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def h2load_version() -> str:
    path = shutil.which("h2load")
    if path is None:
        return "absent"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip().removeprefix("h2load ") or "unknown"


def source_revision(root: str) -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + uncommitted changes in src/" if dirty else "")


def describe() -> dict[str, str]:
    return {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} online, {len(os.sched_getaffinity(0))} usable",
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "h2load": h2load_version(),
        "kernel": platform.release(),
    }


def one_line(machine: dict[str, str]) -> str:
    return (
        f"{machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, "
        f"numpy {machine['numpy']}, numba {machine['numba']}, grpcio {machine['grpcio']}, "
        f"protobuf {machine['protobuf']}, h2load {machine['h2load']}; Linux {machine['kernel']}"
    )
