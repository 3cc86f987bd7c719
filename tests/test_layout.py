"""The package's layers import only downward; tools do not patch sys.path; sam2 is pinned."""
import ast
import os

import pytest
from common import REPO

from refseg_d2.modeling.proposals import check_sam2_version

PACKAGE = os.path.join(REPO, "refseg_d2")
# Each layer may import the layers before it (and itself), never one after it.
LAYERS = ["config", "utils", "modeling", "data", "evaluation", "reporting", "engine", "predictor",
          "testing"]
RANK = {"config": 0, "utils": 0, "modeling": 1, "data": 2, "evaluation": 3, "reporting": 4,
        "engine": 5, "predictor": 6, "testing": 7}


def _layer(module):
    """'refseg_d2.data.mappers' -> 'data'; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path, module):
    """The refseg_d2 modules that ``path`` (module ``module``) imports."""
    tree = ast.parse(open(path).read(), path)
    package = module.split(".")[:-1] if not path.endswith("__init__.py") else module.split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.extend([target] if node.module else [target + "." + a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return [m for m in found if m == "refseg_d2" or m.startswith("refseg_d2.")]


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
                yield path, rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def test_every_module_imports_only_from_its_own_or_earlier_layers():
    upward = []
    for path, module in _modules():
        layer = _layer(module)
        if layer is None:          # refseg_d2/__init__.py re-exports the public API
            continue
        for target in _imports(path, module):
            other = _layer(target)
            if other is None or RANK[other] > RANK[layer]:
                upward.append("{} imports {}".format(module, target))
    assert upward == []


def test_the_layer_check_sees_relative_imports():
    path = os.path.join(PACKAGE, "engine", "trainer.py")
    assert "refseg_d2.evaluation" in _imports(path, "refseg_d2.engine.trainer")
    assert set(RANK) == set(LAYERS)


def test_no_tool_patches_sys_path():
    tools = os.path.join(REPO, "tools")
    offenders = [f for f in sorted(os.listdir(tools)) if f.endswith(".py")
                 and "sys.path" in open(os.path.join(tools, f)).read()]
    assert offenders == []


def test_another_sam2_release_is_refused_with_the_version_to_install():
    check_sam2_version("1.1.0")
    with pytest.raises(ImportError, match=r"sam2==1.1.0 but sam2==1.0 is installed"):
        check_sam2_version("1.0")
