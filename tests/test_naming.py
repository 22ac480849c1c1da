"""Run names are the paper's and round-trip; conditions pool the two directions."""
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
])
def test_names_and_conditions(args, name, cond):
    assert naming.run_name(*args) == name
    assert naming.condition(*args) == cond
    parsed = naming.parse_run_name(name)
    assert naming.run_name(parsed["source"], parsed["target"], parsed["n"], parsed["finetune"]) == name


@pytest.mark.parametrize("bad", ["A0B", "A03B", "baseC", "X3B", "A3B++", ""])
def test_parse_rejects_non_names(bad):
    with pytest.raises(ValueError):
        naming.parse_run_name(bad)
