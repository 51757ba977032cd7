"""Packaging: one version, the sdist and wheel contents, a wheel installed into a fresh virtual
environment running the demo from outside the checkout, results.json's record of the install, and
``--out`` values that cannot be written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import bayesmf
from bayesmf.cli import main
from bayesmf.errors import ConfigError
from bayesmf.experiments import template_text
from bayesmf.experiments.results import git_commit, installation
from bayesmf.experiments.runner import prepare_out_dir

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]  # the source tree under test (a checkout or an unpacked sdist)
VERSION = bayesmf.__version__
# what the build leaves out of its copy of the source tree
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "runs", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", ".hypothesis")


def test_the_version_is_written_in_one_place():
    from bayesmf import _version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bayesmf._version.__version__"}
    assert bayesmf.__version__ == _version.__version__


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"bayesmf {VERSION}\n"


# -- results.json: which bayesmf wrote it -------------------------------------------------------
def test_installation_records_a_checkout_with_its_commit():
    info = installation()
    assert info["bayesmf_version"] == VERSION
    assert Path(info["bayesmf_path"]) == Path(bayesmf.__file__).resolve().parent
    if Path(bayesmf.__file__).resolve().parents[1] != ROOT:
        pytest.skip("bayesmf is not imported from this source tree")
    assert info["bayesmf_install"] == "checkout"
    if (ROOT / ".git").exists() and shutil.which("git"):
        assert len(info["git"]["commit"]) == 40 and isinstance(info["git"]["dirty"], bool)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_is_only_that_of_a_work_tree_top(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    (tmp_path / "sub").mkdir()
    top = git_commit(tmp_path)
    assert top is not None and len(top["commit"]) == 40 and top["dirty"] is False
    # a site-packages inside some project's repository is not bayesmf's source: no commit
    assert git_commit(tmp_path / "sub") is None
    assert git_commit(tmp_path / "missing") is None


# -- bayesmf demo --out that cannot be written ----------------------------------------------------
def _demo(out, capsys) -> tuple[int, str]:
    code = main(["demo", "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err


def test_demo_out_pointing_at_a_file_is_exit_2_and_leaves_the_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    code, err = _demo(target, capsys)
    assert code == 2
    assert f"{target}: the output directory is a file, not a directory" in err and "Traceback" not in err
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_demo_out_under_a_file_is_exit_2(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    code, err = _demo(target / "a" / "b", capsys)
    assert code == 2 and f"lies under {target}, which is a file, not a directory" in err
    assert target.read_text() == "keep me"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores permission bits (test_unwritable_out_dir_as_another_user covers root)")
def test_demo_out_in_a_read_only_directory_is_exit_2_with_nothing_created(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = _demo(locked / "new" / "deeper", capsys)
        assert code == 2 and "cannot write to the output directory (Permission denied)" in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="drops root privileges")
def test_unwritable_out_dir_as_another_user():
    """As root, permission checks are real only for another user: a subprocess switches its
    effective user to nobody (65534) and asks for an output directory in a folder owned by root."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="bayesmf-perm-"))  # outside pytest's 0700 tmp folders
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o755)
        code = ("import os, sys\n"
                "from bayesmf.errors import ConfigError\n"
                "from bayesmf.experiments.runner import prepare_out_dir\n"
                "os.setegid(65534); os.seteuid(65534)\n"
                "try:\n"
                "    prepare_out_dir(sys.argv[1])\n"
                "except ConfigError as exc:\n"
                "    print(exc); sys.exit(2)\n")
        env = {**os.environ, "PYTHONPATH": str(Path(bayesmf.__file__).resolve().parents[1])}
        done = subprocess.run([sys.executable, "-c", code, str(locked / "new" / "deeper")], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "cannot write to the output directory (Permission denied)" in done.stdout
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_a_failed_write_check_removes_the_folders_it_created(tmp_path, monkeypatch, capsys):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, err = _demo(tmp_path / "new" / "deeper", capsys)
    assert code == 2 and "cannot write to the output directory (Permission denied)" in err
    assert list(tmp_path.iterdir()) == []


def test_prepare_out_dir_accepts_new_and_existing_directories(tmp_path):
    assert prepare_out_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "a" / "b" / "results.csv").write_text("x")
    assert prepare_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["results.csv"]  # no probe left
    with pytest.raises(ConfigError, match="is a file"):
        prepare_out_dir(tmp_path / "a" / "b" / "results.csv")


# -- the built distributions ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """sdist and wheel built offline, as `python -m build` does (the wheel from the sdist), from a
    copy of the source tree so that the build leaves nothing in it."""
    pytest.importorskip("build", reason="the dev extra installs build")
    work = tmp_path_factory.mktemp("dist")
    shutil.copytree(ROOT, work / "src", ignore=NOT_SOURCE)
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "dist"),
                           str(work / "src")], capture_output=True, text=True, cwd=work, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sdist = work / "dist" / f"bayesmf-{VERSION}.tar.gz"
    wheel = work / "dist" / f"bayesmf-{VERSION}-py3-none-any.whl"
    assert sdist.is_file() and wheel.is_file()
    return sdist, wheel


def test_the_sdist_carries_the_tests_readme_and_package_data(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"README.md", "LICENSE", "pyproject.toml", "Makefile", "tests/test_packaging.py", "tests/conftest.py",
            "bayesmf/experiments/templates/quickstart.toml", "bayesmf/py.typed",
            "experiments/ml100k-u1.toml", "notebooks/01-quickstart.ipynb", "benchmarks/__init__.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_the_wheel_carries_package_data_and_metadata(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"bayesmf-{VERSION}.dist-info/METADATA").decode()
    assert {"bayesmf/experiments/templates/quickstart.toml", "bayesmf/py.typed", "bayesmf/_version.py",
            f"bayesmf-{VERSION}.dist-info/licenses/LICENSE"} <= names
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
    assert f"\nVersion: {VERSION}\n" in metadata and "\nLicense-Expression: MIT\n" in metadata
    assert "Programming Language :: Python :: 3.11" in metadata
    assert "Description-Content-Type: text/markdown" in metadata


def test_twine_check_passes(dists):
    pytest.importorskip("twine", reason="the dev extra installs twine")
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.count("PASSED") == 2, done.stdout + done.stderr


def _test_env_paths(child_path: list[str]) -> list[str]:
    """The folders on this interpreter's path that the fresh venv lacks (the site-packages holding
    the dependencies: CI's .venv lies inside the checkout, so only the tree's own top folder and
    tests/ are left out)."""
    have = {Path(p or ".").resolve() for p in child_path}
    source = {ROOT, ROOT / "tests"}
    keep = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and path not in have and path not in source and str(path) not in keep:
            keep.append(str(path))
    return keep


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_in_a_fresh_venv_runs_the_demo_outside_the_checkout(dists, tmp_path):
    """The wheel goes into a new virtual environment with pip, offline (--no-index --no-deps); the
    dependencies come from this test environment through a .pth file, placed after the venv's own
    site-packages (a .pth there adds folders but runs no .pth of theirs, so an editable install of
    bayesmf in this environment cannot shadow the wheel)."""
    _, wheel = dists
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    probe = "import json, sys, sysconfig; print(json.dumps([sysconfig.get_path('purelib'), sys.path]))"
    site, child_path = json.loads(subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                                                 check=True, cwd=tmp_path).stdout)
    site = Path(site)
    (site / "zz_test_environment.pth").write_text("\n".join(_test_env_paths(child_path)) + "\n")

    elsewhere = tmp_path / "elsewhere"  # the working directory: not the checkout
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.pop("VIRTUAL_ENV", None)

    def run(*args, timeout=120):
        done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=elsewhere, env=env,
                              timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    # --ignore-installed: pip must not take this environment's bayesmf (seen through the .pth) as
    # already installed, nor try to uninstall it
    run(python, "-m", "pip", "install", "--no-index", "--no-deps", "--ignore-installed", "--quiet",
        "--disable-pip-version-check", wheel)
    where = json.loads(run(python, "-c", "import json, importlib.metadata as m, bayesmf; print(json.dumps("
                           "[bayesmf.__file__, bayesmf.__version__, m.version('bayesmf')]))"))
    assert Path(where[0]).resolve().is_relative_to(site.resolve()), where  # the wheel's copy, not the checkout's
    assert where[1:] == [VERSION, VERSION]

    cli = venv / ("Scripts" if os.name == "nt" else "bin") / "bayesmf"
    assert "demo" in run(cli, "--help")
    assert run(cli, "--version") == f"bayesmf {VERSION}\n"
    assert run(cli, "demo", "--print") == template_text("quickstart")
    run(cli, "demo", "--out", "out", "--quiet", timeout=840)
    out = elsewhere / "out"
    assert (out / "results.csv").is_file() and (out / "report.md").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["n_failed"] == 0
    env_record = results["environment"]
    assert env_record["bayesmf_install"] == "wheel" and env_record["bayesmf_version"] == VERSION
    assert env_record["git"] is None and env_record["packages"]["bayesmf"] == VERSION
    assert Path(env_record["bayesmf_path"]).resolve().is_relative_to(site.resolve())
    assert results["config"]["experiment"]["file"] == "bayesmf:experiments/templates/quickstart.toml"
    assert f"bayesmf {VERSION} (wheel, no git commit)" in (out / "report.md").read_text()
