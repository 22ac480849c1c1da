"""Run names are the paper's and round-trip; conditions pool the two directions; a combination
that is no net of the paper is named with what is wrong."""
import re

import pytest

from keras_transfer import naming


@pytest.mark.parametrize("args,name,cond", [
    (("none", "B", 0, False), "baseB", "base"),
    (("A", "B", 3, False), "A3B", "transfer"),
    (("A", "B", 3, True), "A3B+", "transfer+"),
    (("B", "A", 7, False), "B7A", "transfer"),
    (("B", "B", 1, True), "B1B+", "selffer+"),
    (("A", "A", 5, False), "A5A", "selffer"),
    (("random", "B", 2, False), "R2B", "random"),
    (("none", "A", 0, False, 2), "baseA-x2", "base"),
    (("A", "B", 3, True, 10), "A3B+-x10", "transfer+"),
])
def test_names_and_conditions(args, name, cond):
    assert naming.run_name(*args) == name
    assert naming.condition(*args[:4]) == cond
    parsed = naming.parse_run_name(name)
    assert naming.run_name(**parsed) == name
    assert parsed["stretch"] == (args[4] if len(args) > 4 else 1)


@pytest.mark.parametrize("bad", ["A0B", "A03B", "baseC", "X3B", "A3B++", "", "baseB-x1", "baseB-x",
                                 "baseB-x02", "baseBx2"])
def test_parse_rejects_non_names(bad):
    with pytest.raises(ValueError):
        naming.parse_run_name(bad)


CUTS = ("conv1", "conv2", "conv3")


@pytest.mark.parametrize("source, n, finetune", [
    ("none", 0, False), ("A", 1, False), ("B", 3, True), ("random", 2, False)])
def test_the_papers_nets_have_no_problem(source, n, finetune):
    assert naming.net_problem(source, n, finetune, model="m", cut_names=CUTS) is None


@pytest.mark.parametrize("source, n, finetune, flag, message", [
    ("C", 1, False, "", "source must be one of none, A, B, random, not 'C'"),
    ("A", 4, False, "--", "--n=4 is out of range: .* to 3 for m \\(conv1, conv2, conv3;"),
    ("A", -1, False, "", "n=-1 is out of range"),
    ("A", True, False, "", "n=True is out of range"),
    ("none", 2, False, "--", "--source=none is a base net, .* needs --n=0"),
    ("none", 0, True, "", "finetune needs copied layers"),
    ("random", 2, True, "--", "--finetune with --source=random is not a condition"),
    ("B", 0, False, "--", "--source=B needs --n between 1 and 3"),
])
def test_other_combinations_are_named(source, n, finetune, flag, message):
    problem = naming.net_problem(source, n, finetune, model="m", cut_names=CUTS, flag=flag)
    assert problem is not None and re.search(message, problem), problem
