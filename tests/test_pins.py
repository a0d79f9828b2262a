"""The install is pinned, environment.yml agrees with pyproject.toml, nothing imports
torchvision."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", d).groups() for d in deps)


def environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.fullmatch(r"\s+- ([A-Za-z0-9_.\-\[\]]+)==(\S+)\s*", line)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_every_dependency_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    loose = [d for d in deps if "==" not in d]
    assert not loose, f"unpinned dependencies: {loose}"


def test_the_stack_pins_the_issue_asks_for():
    pins = pyproject_pins()
    for name, version in {"torch": "2.13.0", "opacus": "1.6.0", "flwr[simulation]": "1.42.0",
                          "tenseal": "0.3.18", "monai": "1.6.0", "jupyter-book": "1.0.4.post1",
                          "pydicom": "3.0.2", "dp-accounting": "0.6.0"}.items():
        assert pins.get(name) == version, f"{name} must be pinned to {version}"


def test_environment_yml_agrees_with_pyproject():
    assert environment_pins() == pyproject_pins()


def test_makefile_installs_crypten_without_deps():
    makefile = (ROOT / "Makefile").read_text()
    assert "CRYPTEN := crypten==0.4.1" in makefile and "--no-deps $(CRYPTEN)" in makefile


def test_nothing_imports_torchvision():
    offenders = []
    for path in ROOT.rglob("*"):
        if ".venv" in path.parts or "_build" in path.parts or not path.is_file():
            continue
        if path.suffix in {".py", ".ipynb"} and path.name != "test_pins.py":
            text = path.read_text(errors="ignore")
            if re.search(r"^\s*(import|from)\s+torchvision", text, re.M) \
                    or re.search(r'"\s*(import|from) torchvision', text):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"torchvision cannot be imported beside the CPU torch: {offenders}"
