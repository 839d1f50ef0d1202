"""Task families: the proxy and held-out families build, are disjoint in task, data and size,
and bad families are one-line errors."""
import statistics

import pytest
import torch

from metaopt import tasks
from metaopt.tasks import families
from metaopt.tasks.families import TaskSpec
from metaopt.tasks.stdlib_text import pydoc_corpus, stdlib_corpus

#: which data each task reads (the module docstrings say so; the test below checks the texts)
DATA = {"logreg_digits": "digits", "mlp_digits": "digits", "cnn_digits": "digits",
        "autoencoder_digits": "digits", "rnn_digits": "digits", "charlm": "stdlib source"}


def data_of(spec):
    if spec.task == "tabular":
        return f"sklearn {spec.options['dataset']}"
    if spec.task == "text_lm":
        return f"text {spec.options['text']}"
    return DATA[spec.task]


def test_names_and_fresh_lists():
    assert families.names() == ["heldout", "proxy"]
    a = families.get("proxy")
    a.clear()
    assert families.get("proxy")


@pytest.mark.parametrize("name", ["proxy", "heldout"])
def test_every_member_builds_and_has_a_finite_loss(name):
    for spec, task in families.build(name, "cpu"):
        params = task.init(task.generator(0))
        assert len(params) == len(task.param_info)
        assert torch.isfinite(task.loss(params, task.sample_batch(task.generator(1)))), spec


def test_proxy_covers_the_kinds_search_and_meta_training_need():
    kinds = {s.task for s in families.get("proxy")}
    assert {"mlp_digits", "cnn_digits", "charlm", "autoencoder_digits", "rnn_digits",
            "logreg_digits"} <= kinds
    specs = families.get("proxy")
    assert len({s.options.get("batch_size") for s in specs}) >= 3
    assert len({s.horizon for s in specs}) >= 3 and all(50 <= s.horizon <= 200 for s in specs)
    assert len({s.label for s in specs}) == len(specs)


def test_nothing_in_heldout_is_in_proxy():
    proxy, heldout = families.get("proxy"), families.get("heldout")
    assert not {s.task for s in proxy} & {s.task for s in heldout}
    assert not {data_of(s) for s in proxy} & {data_of(s) for s in heldout}
    assert {data_of(s) for s in proxy} == {"digits", "stdlib source"}
    # the held-out prose is not part of the proxy's source text (charlm's corpus)
    charlm_bytes = max(s.options["corpus_bytes"] for s in proxy if s.task == "charlm")
    source = b"".join(stdlib_corpus(charlm_bytes))
    prose = b"".join(pydoc_corpus(300_000))
    for start in range(0, len(prose) - 64, len(prose) // 50):
        assert prose[start:start + 64] not in source


def test_heldout_is_longer_and_wider():
    proxy, heldout = families.get("proxy"), families.get("heldout")
    typical = statistics.median(s.horizon for s in proxy)
    assert all(4 * typical <= s.horizon <= 10 * typical for s in heldout)
    widest_proxy_mlp = max(s.options["width"] for s in proxy if s.task == "mlp_digits")
    for s in heldout:
        if s.task == "tabular":
            assert 4 * widest_proxy_mlp <= s.options["width"] <= 8 * widest_proxy_mlp
    proxy_seq = max(s.options["width"] for s in proxy if s.task in ("rnn_digits", "charlm"))
    for s in heldout:
        if s.task == "text_lm":
            assert 4 * proxy_seq <= s.options["width"] <= 8 * proxy_seq


def test_unknown_family_is_one_line():
    with pytest.raises(ValueError, match=r"^unknown task family 'nope'; choose one of: "
                                         r"heldout, proxy$"):
        families.get("nope")


def test_empty_family_and_bad_members_are_one_line():
    with pytest.raises(ValueError, match="task family 'mine' is empty"):
        families.register("mine", [])
    with pytest.raises(ValueError, match="member 0 is a str"):
        families.check(["mlp_digits"], "mine")
    with pytest.raises(ValueError, match="member 0: unknown task 'nope'"):
        families.check([TaskSpec("nope")], "mine")
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        families.check([TaskSpec("mlp_digits", {}, 0)], "mine")
    with pytest.raises(ValueError) as e:
        TaskSpec("mlp_digits", {"width": 0}, 10).build()
    assert str(e.value).startswith("task family member mlp_digits(width=0)@10 failed to build")
    assert "width must be an integer >= 1" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="registered twice"):
        families.register("proxy", families.get("proxy"))


def test_register_a_family_and_build_it():
    families.register("tiny", [TaskSpec("logreg_digits", {"batch_size": 8}, 5)])
    try:
        [(spec, task)] = families.build("tiny", dtype=torch.float64)
        assert task.batch_size == 8 and task.dtype == torch.float64 and spec.horizon == 5
    finally:
        families._FAMILIES.pop("tiny")
