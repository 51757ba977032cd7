"""The research notebooks in ``notebooks/``, executed end to end by nbclient: an error in any cell
fails the test. ``BAYESMF_FAST=1`` shrinks their budgets (fewer draws, a smaller rank grid, a
subsample); the code path is the one a reader runs. Every notebook runs on the real data when the
data directory holds them, and the quick start also with an empty data directory, where it must
fall back to synthetic data and say so. Committed notebooks carry no outputs.
"""

import os
import sys
from pathlib import Path

import pytest
from conftest import _shared_data  # tests/ is on sys.path (rootdir conftest, no package)

nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the dev extra installs nbclient")

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
KERNEL = "python3"  # ipykernel installs this kernelspec into the environment that has it
# The limit per notebook under BAYESMF_FAST=1, generous for a loaded machine; nbclient's per-cell limit
# fires first with the cell named, and pytest-timeout's signal method fails only this test.
NOTEBOOK_SECONDS = 600
CELL_SECONDS = 540
SYNTHETIC_NOTE = "running on SYNTHETIC ratings instead"


def _isolate_kernels(monkeypatch, folder: Path) -> None:
    """Hide kernels registered in the user's home, so that "python3" is this environment's kernel."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(folder / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(folder / "jupyter-runtime"))


def _execute(path: Path, data_dir: Path, cwd: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run every cell of ``path`` in a fresh kernel started in ``cwd``, with ``BAYESMF_DATA=data_dir``."""
    _isolate_kernels(monkeypatch, cwd)
    monkeypatch.setenv("BAYESMF_FAST", "1")
    monkeypatch.setenv("BAYESMF_DATA", str(data_dir))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, so figures are outputs
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_SECONDS, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    return notebook


def _stdout(notebook) -> str:
    return "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.get("name") == "stdout")


def _cells_showing_no_figure(notebook) -> list[int]:
    """Indices of the code cells that call ``plt.show()`` but output no PNG."""
    return [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and "plt.show()" in cell.source
            and not any("image/png" in out.get("data", {}) for out in cell.outputs)]


def test_the_six_research_notebooks_are_there():
    assert [p.name[:3] for p in NOTEBOOKS[:6]] == ["01-", "02-", "03-", "04-", "05-", "06-"]


def test_the_python3_kernel_runs_this_interpreter(tmp_path, monkeypatch):
    kernelspec = pytest.importorskip("jupyter_client.kernelspec", reason="the dev extra installs jupyter_client")
    _isolate_kernels(monkeypatch, tmp_path)
    argv = kernelspec.KernelSpecManager().get_kernel_spec(KERNEL).argv
    # jupyter_client starts a spec whose argv[0] is "python" with sys.executable
    assert argv[0] in ("python", sys.executable) and argv[1:3] == ["-m", "ipykernel_launcher"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs_and_a_python3_kernel(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == KERNEL
    code = [c for c in notebook.cells if c.cell_type == "code"]
    with_outputs = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not with_outputs, f"{path.name}: code cells {with_outputs} carry outputs; clear them before committing"
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and "How long it takes" in first.source and "Data." in first.source


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_SECONDS, method="signal")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_error(path, tmp_path, monkeypatch):
    data = _shared_data()
    notebook = _execute(path, data if data is not None else tmp_path / "no-data", tmp_path, monkeypatch)
    assert (SYNTHETIC_NOTE in _stdout(notebook)) == (data is None)
    assert "plt.show()" in "".join(c.source for c in notebook.cells)  # pictures, not only tables
    assert _cells_showing_no_figure(notebook) == []


@pytest.mark.slow
@pytest.mark.timeout(NOTEBOOK_SECONDS, method="signal")
def test_quickstart_falls_back_to_synthetic_data_with_a_visible_note(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    notebook = _execute(FOLDER / "01-quickstart.ipynb", empty, tmp_path, monkeypatch)
    assert SYNTHETIC_NOTE in _stdout(notebook) and _cells_showing_no_figure(notebook) == []
    assert not os.listdir(empty)  # nothing downloaded or written into the data directory
