"""`python -m data_prep.splits --num_classes=K --split=SPEC [--dataset=NAME]` prints the halves of
a split as JSON {"A": [...], "B": [...]}, without preparing any data.

A module of its own, apart from the split rules it runs: its flags (cli_flags) come with
`prepare`, which imports the rules, so the rules must not import the flags.
"""
import json
import sys

from absl import app

from data_prep import flag_errors
from data_prep.cli_flags import FLAGS, list_in_help
from data_prep.errors import DataPrepError
from data_prep.splits import DISSIMILAR, resolve


def main(argv):
    """Prints {"A": [...], "B": [...]} for --num_classes and --split (and --dataset)."""
    if len(argv) > 1:
        raise DataPrepError(f"unexpected arguments {argv[1:]}; use --num_classes and --split")
    num_classes = FLAGS.num_classes
    if num_classes is None and FLAGS.dataset in DISSIMILAR:
        num_classes = len(DISSIMILAR[FLAGS.dataset][0])
    if num_classes is None:
        raise DataPrepError("pass --num_classes=K (the number of classes of the dataset)")
    halves = resolve(FLAGS.split, num_classes, dataset=FLAGS.dataset)
    print(json.dumps({"A": list(halves.A), "B": list(halves.B)}))


def _main(argv):
    try:
        main(argv)
    except DataPrepError as e:
        print(f"data_prep.splits: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    list_in_help()
    app.run(_main, flags_parser=flag_errors.parser("data_prep.splits: ", 1))
