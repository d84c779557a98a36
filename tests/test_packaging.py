"""Build a wheel offline, install it in a fresh venv and run the installed ``stfcat`` from
outside the repository: the catalog YAML and the model zoo (``code/`` -> ``stfcat_zoo``) must
travel in the wheel, and every Python package of the source tree must be listed in pyproject."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> installed package name (see [tool.setuptools] package-dir)
ROOTS = {"stfcat": "stfcat", "code": "stfcat_zoo", "catalog": "stfcat_catalog"}
_ANYWHERE = shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache",
                                   ".ruff_cache", ".venv")
_TOP = {"build", "dist", "runs", "site", "tests", "results", "benchmarks"}  # only at the repository root


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = set(_ANYWHERE(folder, names))
    return skip | (_TOP & set(names)) if Path(folder) == REPO else skip


def _source_packages() -> set[str]:
    out = set()
    for folder, name in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            if "__pycache__" not in rel:
                out.add(".".join((name, *rel)))
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_ignore)  # build outside the repo: no build/ or egg-info there
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check", "--outdir", str(tmp / "dist"),
                          str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [whl] = (tmp / "dist").glob("stfcat-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _source_packages() - in_wheel
    assert not missing, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(missing)}"
    for kind in ("papers", "datasets"):
        want = sorted(p.name for p in (REPO / "catalog" / kind).glob("*.yaml"))
        got = sorted(Path(n).name for n in names if n.startswith(f"stfcat_catalog/{kind}/") and n.endswith(".yaml"))
        assert got == want, f"catalog/{kind} YAML missing from the wheel: {sorted(set(want) - set(got))}"
    zoo = sorted(p.name for p in (REPO / "code").glob("*.py"))
    assert sorted(Path(n).name for n in names if n.startswith("stfcat_zoo/") and n.endswith(".py")) == zoo


def _dependency_dirs() -> list[str]:
    """The site-packages folders this interpreter takes its dependencies from: a venv's own (the
    README's fresh venv), the system's (a venv with system site packages, or no venv), or both."""
    out = []
    for entry in sys.path:
        p = Path(entry or ".").resolve()
        if p.name in ("site-packages", "dist-packages") and p.is_dir() and not p.is_relative_to(REPO):
            out.append(str(p))
    return list(dict.fromkeys(out))


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_repo(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The dependencies (offline) come from wherever this interpreter has them, through a .pth file:
    # its lines are appended to sys.path after the new venv's own site-packages, so the installed
    # wheel wins, and .pth files in those folders (the editable install's finder) are not run.
    site_dir = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(site_dir).mkdir(parents=True, exist_ok=True)
    (Path(site_dir) / "_outer_deps.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                          "--ignore-installed", "--no-warn-script-location", "-q", str(wheel)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import stfcat, stfcat_catalog, stfcat_zoo; from stfcat.catalog import default_catalog_dir;"
         "print(stfcat.__file__); print(stfcat_zoo.__file__); print(default_catalog_dir())"],
        cwd=cwd, capture_output=True, text=True, check=True).stdout.split()
    for path in where:
        assert Path(path).resolve().is_relative_to(venv.resolve()), f"{path} is not from the installed wheel"
    out = subprocess.run([str(venv / "bin" / "stfcat"), "list", "papers", "--json"], cwd=cwd,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    papers = json.loads(out.stdout)
    assert len(papers) == len(list((REPO / "catalog" / "papers").glob("*.yaml"))) > 0
