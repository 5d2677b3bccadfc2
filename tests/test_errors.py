"""require(): a missing package names its extra; an installed but broken one names its error, in one line."""

from __future__ import annotations

import sys

import pytest

from nucseg.errors import NucsegError, require


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """A folder on sys.path where a test writes the modules it imports."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith("nucseg_probe_")]:
        del sys.modules[name]


def test_require_passes_modules_that_import(packages):
    (packages / "nucseg_probe_fine.py").write_text("VALUE = 1\n")
    require("nucseg_probe_fine", "json", purpose="the probe")
    assert sys.modules["nucseg_probe_fine"].VALUE == 1


def test_a_missing_module_names_the_extra_to_install(packages):
    with pytest.raises(NucsegError) as raised:
        require("json", "nucseg_probe_absent", purpose="the probe")
    message = str(raised.value)
    assert message == 'the probe needs nucseg_probe_absent, which is not installed: pip install "nucseg[train]"'


def test_an_installed_module_that_fails_to_import_is_named_with_its_error(packages):
    # What torchvision built for another torch does: its compiled operators do not load, and import raises.
    (packages / "nucseg_probe_mismatched.py").write_text(
        'raise RuntimeError("operator nucseg_probe::nms does not exist\\nmore detail")\n'
    )
    (packages / "nucseg_probe_needs_absent.py").write_text("import nucseg_probe_dependency_absent\n")
    for module, error in (
        ("nucseg_probe_mismatched", "operator nucseg_probe::nms does not exist"),
        ("nucseg_probe_needs_absent", "No module named 'nucseg_probe_dependency_absent'"),
    ):
        with pytest.raises(NucsegError) as raised:
            require(module, purpose="the probe")
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith(f"the probe needs {module}, which is installed but fails to import ({error})")
        assert f"reinstall it, e.g. pip install --force-reinstall {module}" in message


def test_a_broken_torchvision_says_torch_and_torchvision_must_match(packages, monkeypatch):
    # A stand-in found before the installed torchvision, failing as PyPI's does beside a CPU-only torch.
    (packages / "torchvision").mkdir()
    (packages / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    with pytest.raises(NucsegError) as raised:
        require("torchvision", purpose="nucseg train")
    message = str(raised.value)
    assert message.startswith("nucseg train needs torchvision, which is installed but fails to import (operator")
    assert message.endswith("e.g. pip install --force-reinstall torch torchvision")
