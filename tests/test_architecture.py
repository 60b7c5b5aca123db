"""The rules of the layout, in one place: which package may import which, and no circular
imports (each module can be the first one imported).

- `edge` (the runtime) never imports `services`: workers are found through entry points.
- `hardware` never imports `services`, and from `edge` only small shared modules.
- A worker package under `services/` never imports another worker: they talk through the
  bus and through commands.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What hardware/ may use of the runtime: shared types and helpers with no runtime state.
HARDWARE_MAY_IMPORT_FROM_EDGE = {"edge.clock", "edge.breaker"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(top: str):
    return sorted((REPO / top).rglob("*.py"))


def test_edge_never_imports_services():
    for path in modules_under("edge"):
        assert not any(n == "services" or n.startswith("services.") for n in imports_of(path)), path


def test_hardware_imports_no_services_and_only_shared_parts_of_edge():
    for path in modules_under("hardware"):
        names = imports_of(path)
        assert not any(n.startswith("services") for n in names), path
        from_edge = {n for n in names if n == "edge" or n.startswith("edge.")}
        assert from_edge <= HARDWARE_MAY_IMPORT_FROM_EDGE, f"{path} imports {from_edge - HARDWARE_MAY_IMPORT_FROM_EDGE}"


def test_workers_never_import_each_other():
    for service in (REPO / "services").iterdir():
        if not service.is_dir() or service.name.startswith("_"):
            continue
        for path in service.rglob("*.py"):
            others = {n.split(".")[1] for n in imports_of(path) if n.startswith("services.") and n.count(".")}
            assert others <= {service.name}, f"{path} imports another worker: {others}"


def test_every_module_imports_on_its_own():
    """No circular imports: each module can be the first one imported."""
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for top in ("edge", "hardware", "services")
                     for p in (REPO / top).rglob("*.py") if "__main__" not in p.name)
    modules = [m.removesuffix(".__init__") for m in modules]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)"
    for m in modules:
        result = subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, f"{m}: {result.stderr[-500:]}"


def test_runtime_and_recognizer_load_no_opencv():
    """cv2 costs ~17 MB resident in each process that imports it (issue 9 item 11): only
    the USB camera backend may load it, when it is configured."""
    code = ("import sys, edge.runtime, edge.cli, hardware.camera, services.doorbell.worker, "
            "services.doorbell.recognizer_child, services.doorbell.enrollment\n"
            "hardware.camera.make_camera('fake', None, 64, 48)\n"
            "print(sorted(m for m in sys.modules if m == 'cv2' or m.startswith('cv2.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-800:]
    assert result.stdout.strip() == "[]", f"cv2 was imported: {result.stdout.strip()}"
