"""The zoo registry: a member's id is written once, in ``@register``; the registry names the
rule it builds, and the member's checks are named by that rule. Tests mirror the package: each
module ``metaopt/zoo/<m>.py`` has its ``test_zoo_<m>.py``, which runs every member ``<m>``
registers."""
import inspect
import re
from pathlib import Path

import pytest
import torch

from metaopt import zoo

MEMBERS = zoo.names()
TESTS = Path(__file__).parent
MODULES = sorted(p.stem for p in Path(zoo.__file__).parent.glob("*.py")
                 if not p.stem.startswith("_"))  # private helpers are tested through users


def _test_file(module: str) -> Path:
    return TESTS / f"test_zoo_{module.rsplit('.', 1)[-1]}.py"


@pytest.mark.parametrize("module", MODULES)
def test_every_zoo_module_has_its_test_file(module):
    assert _test_file(module).is_file(), f"metaopt/zoo/{module}.py has no {_test_file(module).name}"


@pytest.mark.parametrize("name", MEMBERS)
def test_every_member_runs_in_its_module_test_file(name):
    path = _test_file(inspect.getmodule(zoo.entry(name).factory).__name__)
    assert path.is_file(), f"{name!r} is registered in a module without {path.name}"
    assert re.search(rf"""["']{name}["']""", path.read_text()), f"{path.name} never runs {name!r}"


@pytest.mark.parametrize("name", MEMBERS)
def test_the_registry_names_the_rule(name):
    assert zoo.entry(name).factory().name == ""  # the factory does not type the id
    assert zoo.rule(name).name == name
    assert zoo.create(name, [torch.nn.Parameter(torch.ones(2, 2))]).rule.name == name


@pytest.mark.parametrize("name", MEMBERS)
def test_the_id_is_written_once_in_its_member_file(name):
    source = inspect.getsource(inspect.getmodule(zoo.entry(name).factory))
    quoted = re.findall(rf"""["']{name}["']""", source)
    assert len(quoted) == 1, f"{name!r} is typed {len(quoted)} times in its module"


@pytest.mark.parametrize("name", MEMBERS)
def test_no_message_in_its_member_file_retypes_the_id(name):
    """Messages outside ``check`` name the member by ``member_id(factory)``."""
    factory = zoo.entry(name).factory
    source = inspect.getsource(inspect.getmodule(factory))
    assert not re.search(rf"""["']{name}: """, source), f"a message retypes {name!r}"
    assert zoo.registry.member_id(factory) == name


@pytest.mark.parametrize("name", MEMBERS)
def test_a_bad_lr_is_named_by_the_member(name):
    with pytest.raises(ValueError, match=rf"^{name}: invalid lr=-1.0: must be"):
        zoo.rule(name, lr=-1.0)
