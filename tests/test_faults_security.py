"""The security rules: every torch.load in the repo loads weights only, and training and analysis need no
network unless asked."""
import ast
from pathlib import Path

from catlab.cli import main
from conftest import SMALL, no_network

REPO = Path(__file__).resolve().parents[1]


# ---- security ------------------------------------------------------------------------------------------
def _repo_py_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "__pycache__", "build", "dist"}
    return [p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts)
            and not any(part.startswith(".") for part in p.relative_to(REPO).parts)]


def unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of torch.load(...) calls (or `load` imported from torch) without weights_only=True."""
    tree = ast.parse(source)
    aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "torch"
               for a in n.names if a.name == "load"}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        is_load = (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                   and f.value.id == "torch") or (isinstance(f, ast.Name) and f.id in aliases)
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in node.keywords)
        if is_load and not safe:
            bad.append(node.lineno)
    return bad


def test_every_torch_load_in_the_repo_uses_weights_only():
    assert unsafe_torch_loads("import torch\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
                              "torch.load(p, weights_only=True)\nfrom torch import load as L\nL(p)\n") == [2, 3, 6]
    files = _repo_py_files()
    assert REPO / "catlab" / "checkpoint.py" in files and len(files) > 30
    offenders = {str(p.relative_to(REPO)): lines for p in files if (lines := unsafe_torch_loads(p.read_text()))}
    assert offenders == {}, f"torch.load without weights_only=True: {offenders}"


def test_train_and_analyze_need_no_network(workdir, capsys):
    """A 1-step run (MLflow on, sqlite) and its analysis with the default metrics, with the network blocked."""
    with no_network() as attempts:
        assert main(["train", *SMALL, "train.steps=1", "run.mlflow=true"]) == 0
        run_dir = next((workdir / "runs").iterdir())
        assert main(["analyze", str(run_dir), "--n", "16"]) == 0
    assert attempts == []
    out = capsys.readouterr().out
    assert "fid" in out and "discrepancy_l2" in out
    assert (run_dir / "analysis.csv").exists()
