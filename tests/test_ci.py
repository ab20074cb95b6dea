"""The test setup itself: `.ci/run` fails when PostgreSQL cannot be installed (and makes the PostgreSQL test
fail instead of skip), and pytest runs with --strict-markers (a misspelt marker is an error, not a no-op)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ci(tmp_path: Path, apt_get: str) -> tuple[subprocess.CompletedProcess, Path]:
    """.ci/run with fake apt-get and make first on PATH, no initdb anywhere; (result, make's log)."""
    bin_dir, pg_lib, log = tmp_path / "bin", tmp_path / "pg", tmp_path / "make.log"
    bin_dir.mkdir()
    pg_lib.mkdir()
    make = f'echo "make $* CATLAB_REQUIRE_POSTGRES=$CATLAB_REQUIRE_POSTGRES" >> {log}'
    for name, body in (("apt-get", apt_get), ("make", make)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "PG_LIB": str(pg_lib)}
    assert subprocess.run(["sh", "-c", "command -v initdb"], env=env, capture_output=True).returncode != 0
    result = subprocess.run(["bash", str(REPO / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    return result, log


def test_ci_fails_when_postgresql_cannot_be_installed(tmp_path):
    result, log = _ci(tmp_path, "exit 100")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "error: could not install postgresql (apt-get failed); the PostgreSQL storage test needs initdb"
    assert not log.exists()                                     # the tests never ran


def test_ci_fails_when_the_install_leaves_no_initdb(tmp_path):
    result, log = _ci(tmp_path, "exit 0")
    assert result.returncode == 1 and "there is no initdb in PATH" in result.stderr and not log.exists()


def test_ci_runs_the_tests_requiring_postgresql_once_installed(tmp_path):
    initdb = tmp_path / "pg" / "15" / "bin" / "initdb"
    result, log = _ci(tmp_path, f'[ "$1" = install ] && mkdir -p {initdb.parent} && touch {initdb}; exit 0')
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["make test CATLAB_REQUIRE_POSTGRES=1"]


def test_pytest_rejects_unknown_markers(tmp_path):
    (tmp_path / "test_x.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.slwo
        def test_misspelt():
            pass
    """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir",
                          str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_x.py")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "'slwo' not found in `markers` configuration option" in out.stdout + out.stderr, \
        out.stdout[-2000:]
