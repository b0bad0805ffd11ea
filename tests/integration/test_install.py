"""A user's install: the wheel built from this checkout, installed (not editable) into a
fresh virtualenv and used from another directory: the demo runs on its embedded broker,
the bundled topics.yaml and schemas are found, and nothing but ``leadstream`` lands in
site-packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from leadstream.ops.broker import free_port

from .conftest import HOME

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The fresh venv's bin directory. The wheel is built like ``pip install .`` builds it
    (build isolation: setuptools from the package index); the venv gets leadstream from
    the wheel only, and its dependencies through a ``.pth`` line naming this test run's
    site-packages (installing numpy, river and Faust again from the index would test the
    index, not the package). A ``.pth`` line adds a directory without running the ``.pth``
    files inside it, so this checkout's editable install stays out."""
    tmp = tmp_path_factory.mktemp("install")
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp / "dist"), str(REPO)], check=True, timeout=600, env=env)
    wheel = next((tmp / "dist").glob("leadstream-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert all(t == "leadstream" or t.endswith(".dist-info") for t in tops), tops
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300,
                   env=env)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300, env=env)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()
    Path(site, "_leadstream_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _clean_env() -> dict:
    """The environment without this checkout on the path and without leadstream settings."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("LEADSTREAM_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(bin_dir: Path, *args, cwd: Path, timeout: float = 120, env_extra=None):
    env = _clean_env()
    env.update(LEADSTREAM_HOME=str(HOME), COLUMNS="160", **(env_extra or {}))
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_holds_only_leadstream_and_its_data(installed, tmp_path):
    where = _run(installed, "python", "-c",
                 "import leadstream, leadstream.models.suite as s;"
                 "import leadstream.contract.resources as r;"
                 "print(leadstream.__file__); print(s.__file__);"
                 "print(r.bundled('topics.yaml')); print(r.SOURCE_ROOT)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    init, suite, topics, source = where.stdout.split()
    venv = str(installed.parent)
    assert init.startswith(venv) and suite.startswith(venv) and topics.startswith(venv)
    assert source == "None"  # not the checkout's files
    for generic in ("models", "features", "streams", "ops"):
        bare = _run(installed, "python", "-c", f"import {generic}", cwd=tmp_path)
        assert bare.returncode != 0 and "ModuleNotFoundError" in bare.stderr, generic
    version = _run(installed, "leadstream", "--version", cwd=tmp_path)
    assert version.returncode == 0 and "0.1.0" in version.stdout + version.stderr
    listed = _run(installed, "leadstream", "topics", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "interactions" in {t["topic"] for t in json.loads(listed.stdout)["topics"]}
    schemas = _run(installed, "leadstream", "schemas", cwd=tmp_path)
    assert schemas.returncode == 0 and "up to date" in schemas.stdout, schemas.stdout
    refused = _run(installed, "leadstream", "schemas", "--write", cwd=tmp_path)
    assert refused.returncode == 2 and "source checkout" in refused.stderr


def test_the_demo_runs_from_the_installed_package_in_another_directory(installed, tmp_path):
    out = _run(installed, "leadstream", "demo", "--duration", "30", "--rate", "30",
               cwd=tmp_path, timeout=240,
               env_extra={"LEADSTREAM_BROKER_PORT": str(free_port()),
                          "LEADSTREAM_WEB_PORT": str(free_port())})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "embedded kafka broker" in out.stdout
    assert "conf " in out.stdout and " 1. P" in out.stdout  # a ranked list on screen
