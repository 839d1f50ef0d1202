"""The zoo registry: a member's id is written once, in ``@register``; the registry names the
rule it builds, and the member's checks are named by that rule."""
import inspect
import re

import pytest
import torch

from metaopt import zoo

MEMBERS = zoo.names()


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
def test_a_bad_lr_is_named_by_the_member(name):
    with pytest.raises(ValueError, match=rf"^{name}: invalid lr=-1.0: must be"):
        zoo.rule(name, lr=-1.0)
