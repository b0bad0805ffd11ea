"""A real Prometheus and promtool for the tests: Debian's `prometheus` package, installed
with apt-get when missing and the tests run as root (CI); elsewhere the tests that need it
skip, and fail under CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _install_prometheus() -> None:
    """apt-get install prometheus, without letting the package start a daemon."""
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    try:
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                           timeout=600, check=True)
            subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=True)
    finally:
        if created:
            policy.unlink()


@pytest.fixture(scope="session")
def prometheus_bin() -> tuple[str, str]:
    """(prometheus, promtool) executables."""
    if shutil.which("prometheus") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        _install_prometheus()
    exe, tool = shutil.which("prometheus"), shutil.which("promtool")
    if exe is None or tool is None:
        msg = "Prometheus is not installed (apt-get install prometheus, as root)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe, tool
