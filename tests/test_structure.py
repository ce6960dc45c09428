"""The package's structure, as a newcomer reads it: importing it changes no class (it registers with the
Auto classes, nothing more); the ignore index is one named constant; the names that comments point to
exist; one helper walks an error's causes."""

import importlib
import importlib.util
import inspect
import re
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
MODEL_CLASSES = ("SegFormerPreTrainedModel", "SegFormerModel", "SegFormerForSemanticSegmentation",
                 "SegFormerForImageClassification", "SegFormerBackbone")  # fmt: skip
# What registering with the Auto classes sets (`register_for_auto_class`): registration, not patching.
REGISTRATION = {"_auto_class"}


def fresh_model_module():
    """The model file executed again as a new module: its classes as the file defines them."""
    spec = importlib.util.spec_from_file_location("segformer._fresh_modeling", modeling.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def origin(value, module_name: str):
    """What a class attribute is, comparable across two executions of the model file: where a function
    (method, property) was defined, or the value itself."""
    function = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
    if inspect.isfunction(function) or inspect.isclass(function):
        where = "the model file" if function.__module__ == module_name else function.__module__
        return where, function.__qualname__
    return value


@pytest.mark.parametrize("name", MODEL_CLASSES)
def test_importing_the_package_changes_no_model_class(name):
    fresh_module = fresh_model_module()
    imported, fresh = vars(getattr(modeling, name)), vars(getattr(fresh_module, name))
    assert set(imported) - REGISTRATION == set(fresh), "an attribute was added or removed at import"
    for attribute in set(fresh) - {"__dict__", "__weakref__", "__doc__", "__module__"}:
        assert origin(imported[attribute], modeling.__name__) == origin(fresh[attribute], fresh_module.__name__), attribute


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
    """`segformer.x.y` and `<hub file>.y` references (in backticks) name what is there."""
    broken = []
    for path in PACKAGE.rglob("*.py"):
        for reference in sorted(set(re.findall(r"`((?:segformer|\w+_segformer)\.[\w.]*\w)`", path.read_text()))):
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
