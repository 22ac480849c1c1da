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
