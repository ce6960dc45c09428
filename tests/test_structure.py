"""The package's structure, as a newcomer reads it: importing it changes no class (it registers with the
Auto classes, nothing more); the ignore index is one named constant; the names that comments point to
exist; one helper walks an error's causes."""

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import PreTrainedModel

import segformer
import segformer.modeling_segformer as modeling
from segformer.configuration_segformer import IGNORE_INDEX, SegFormerConfig
from segformer.errors import chain_message, error_chain
from segformer.hub import push_model_to_hub

PACKAGE = Path(segformer.__file__).parent
# Run in a fresh interpreter, so that nothing but the import has touched the classes (transformers caches
# values on a class once a model is built): imports the package, executes the model file again as a new
# module, and prints how the package's model classes differ from the file's own.
CLASSES_AFTER_IMPORT = """
import importlib.util, inspect, json
import segformer
import segformer.modeling_segformer as modeling

# What registering with the Auto classes sets (`register_for_auto_class`): registration, not patching.
REGISTRATION = {"_auto_class"}
spec = importlib.util.spec_from_file_location("segformer._fresh_modeling", modeling.__file__)
fresh_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fresh_module)


def origin(value, module):
    # A function (method, property) as where it was defined; anything else as itself.
    function = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
    if inspect.isfunction(function) or inspect.isclass(function):
        return ("the model file" if function.__module__ == module.__name__ else function.__module__), function.__qualname__
    return repr(value)


differences = []
for name in ("SegFormerPreTrainedModel", "SegFormerModel", "SegFormerForSemanticSegmentation",
             "SegFormerForImageClassification", "SegFormerBackbone"):
    imported, fresh = vars(getattr(modeling, name)), vars(getattr(fresh_module, name))
    differences += [f"{name}.{key} added" for key in set(imported) - set(fresh) - REGISTRATION]
    differences += [f"{name}.{key} removed" for key in set(fresh) - set(imported)]
    for key in set(fresh) & set(imported) - {"__dict__", "__weakref__", "__doc__", "__module__"}:
        if origin(imported[key], modeling) != origin(fresh[key], fresh_module):
            differences.append(f"{name}.{key} is {origin(imported[key], modeling)}")
print(json.dumps(sorted(differences)))
"""


@pytest.mark.slow  # a fresh interpreter: seconds to import torch and transformers
def test_importing_the_package_changes_no_model_class():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", CLASSES_AFTER_IMPORT], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []


def without_the_package(monkeypatch):
    """This process as one that cannot import `segformer` (the Hub code's situation)."""
    for name in [name for name in sys.modules if name.split(".")[0] == "segformer"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "segformer", None)


def test_the_hub_file_uses_the_package_where_installed_else_plain_transformers(monkeypatch, tiny_config):
    assert modeling.from_segformer_package("hub.upload", "push_model_to_hub") is push_model_to_hub
    model = modeling.SegFormerForSemanticSegmentation(tiny_config())
    calls = []
    monkeypatch.setattr(PreTrainedModel, "push_to_hub", lambda self, *args, **kwargs: calls.append((args, kwargs)))
    without_the_package(monkeypatch)
    assert modeling.from_segformer_package("hub.upload", "push_model_to_hub") is None
    assert modeling.from_segformer_package("conversion.on_the_fly", "convert_for_from_pretrained") is None
    model.push_to_hub("user/model", commit_message="plain")
    assert calls == [(("user/model",), {"commit_message": "plain"})]


def test_the_ignore_index_is_one_named_constant():
    assert SegFormerConfig().semantic_loss_ignore_index == IGNORE_INDEX == 255
    literal = re.compile(r"ignore_index\w*\s*(:\s*int\s*)?=\s*255\b")
    found = [f"{path.relative_to(PACKAGE)}:{number}" for path in PACKAGE.rglob("*.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]  # fmt: skip
    assert found == [], "use IGNORE_INDEX (or the config's semantic_loss_ignore_index)"


def resolve(reference: str):
    """The object a dotted reference names, or a string saying why there is none. A function or class
    named through a plain module must be defined there (a package may re-export)."""
    parts = reference.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            owner, found = found, getattr(found, name, None)
            if found is None:
                return f"no {name} in {owner.__name__}"
            defined_in = getattr(found, "__module__", owner.__name__)
            if inspect.ismodule(owner) and not hasattr(owner, "__path__") and defined_in != owner.__name__:
                return f"{name} is defined in {defined_in}"
        return found
    return "no such module"


def test_names_that_comments_and_docstrings_point_to_exist():
    """`segformer.x.y`, `<hub file>.y` and `<hub file>.py` references (in backticks) name what is there."""
    broken = []
    for path in PACKAGE.rglob("*.py"):
        for reference in sorted(set(re.findall(r"`((?:segformer|\w+_segformer)\.[\w.]*\w)`", path.read_text()))):
            if reference.endswith(".py"):  # a Hub file by its file name
                if not (PACKAGE / reference).is_file():
                    broken.append(f"{path.relative_to(PACKAGE)}: `{reference}`: no such file")
                continue
            dotted = reference if reference.startswith("segformer.") else f"segformer.{reference}"
            if isinstance(why := resolve(dotted), str):
                broken.append(f"{path.relative_to(PACKAGE)}: `{reference}`: {why}")
    assert broken == []


def test_one_helper_walks_the_causes_of_an_error():
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise OSError("outer") from inner
    except OSError as error:
        assert [type(cause) for cause in error_chain(error)] == [OSError, KeyError]
        assert chain_message(error) == "OSError: outer; caused by KeyError: 'inner'"
    looped = ValueError("looped")
    looped.__context__ = looped
    assert list(error_chain(looped)) == [looped]
