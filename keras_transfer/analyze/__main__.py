"""The command line of `python -m keras_transfer.analyze` (see the package's docstring).

argparse, not absl, as in `report`: main's absl flags are the package's one absl namespace.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep import quiet_tensorflow
from keras_transfer import stopping

# Each output folder or file is written whole or not at all, so a Ctrl-C leaves none half-made.
INTERRUPTED = ("analyze: stopped by SIGINT; nothing unfinished was written; run the same "
               "command again")

# Run as `python -m`, not imported (the API, the tests): a Ctrl-C while the modules below load
# (TensorFlow's, the longest part of start-up) is one line too.
AS_COMMAND = __name__ == "__main__"
if AS_COMMAND:
    stopping.catch_interrupts()
try:
    quiet_tensorflow.import_tensorflow()  # before the modules below import it

    from keras_transfer import metrics, models, outputs
    from keras_transfer.analyze import filters, predict, similarity, trained_nets
except BaseException as error:
    if AS_COMMAND:
        stopping.exit_if_interrupted(error, INTERRUPTED)
    raise


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keras_transfer.analyze",
                                description="Layer similarity (CKA), transfer-curve prediction "
                                            "and first-convolution filters of trained nets.")
    commands = p.add_subparsers(dest="command", required=True)

    s = commands.add_parser("similarity", help="linear CKA per cut point between two trained "
                                               "nets of one model")
    s.add_argument("--a", required=True, help="run directory of the first net")
    s.add_argument("--b", required=True, help="run directory of the second net")
    s.add_argument("--data", required=True,
                   help="prepared half (DATA/<dataset>/<split_dir>/<A|B>) whose validation "
                        "images both nets see")
    cut_points = "; ".join(f"{arch.name}: {' '.join(arch.cut_names)}"
                           for arch in models.ARCHITECTURES.values())
    s.add_argument("--layers", nargs="+", default=None, metavar="CUT_POINT",
                   help="cut points to compare, by name (default: every cut point of the nets' "
                        f"model; {cut_points})")
    s.add_argument("--batch_size", type=int, default=similarity.DEFAULT_BATCH_SIZE,
                   help="minibatch of the unbiased HSIC estimate (memory: one batch of "
                        "activations)")
    s.add_argument("--max_examples", type=int, default=None,
                   help="use at most this many validation images (whole batches)")
    s.add_argument("--out", default=None,
                   help="output folder (default WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/"
                        "similarity/<A>_vs_<B>_on_<dataset>-<split_dir>-<half> of the data; B is "
                        "<dataset>-<split_dir>-seed<k>-<run> when not in A's seed folder)")

    r = commands.add_parser("predict", help="CKA(baseA, baseB) per cut point vs the measured "
                                            "transfer drop per n")
    r.add_argument("path", help="the grid's WORKDIR, or one WORKDIR/<dataset>/<split_dir>/seed<k>")
    r.add_argument("--data_dir", default=None,
                   help="root of the prepared data (default: each run's --data_dir)")
    r.add_argument("--metric", choices=predict.METRICS, default=metrics.HEADLINE,
                   help="top-1 used for the measured drop (as in the report)")
    r.add_argument("--batch_size", type=int, default=similarity.DEFAULT_BATCH_SIZE)
    r.add_argument("--max_examples", type=int, default=None)
    r.add_argument("--recompute", action="store_true",
                   help="recompute CKA even when a similarity.json of the same inputs exists")
    r.add_argument("--out", default=None,
                   help="output folder (default WORKDIR/report); with --out the per-pair CKA "
                        "folders go to OUT/analysis/ instead of WORKDIR/analysis/")

    f = commands.add_parser("filters", help="first-convolution filters of trained nets as "
                                            "image grids")
    f.add_argument("runs", nargs="+", help="run directories")
    f.add_argument("--data_dir", default=None,
                   help="root of the prepared data (default: each run's --data_dir); only the "
                        "image shape is read, to rebuild the net")
    f.add_argument("--out", default=None,
                   help="output folder (default WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/"
                        "filters)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "similarity":
        result = similarity.similarity(args.a, args.b, args.data, layers=args.layers,
                                       batch_size=args.batch_size,
                                       max_examples=args.max_examples)
        out = Path(args.out) if args.out else similarity.default_similarity_out(
            args.a, args.b, result["data"])
        similarity.write_similarity(result, out)
        print(f"[analyze] CKA {result['a']['run']} vs {result['b']['run']} on "
              f"{result['examples']} validation images of {args.data}")
        print(similarity.markdown_table(result))
        print(f"[analyze] wrote {out}/similarity.json, similarity.png, tb/")
    elif args.command == "predict":
        out = Path(args.out) if args.out else trained_nets.workdir_of(
            trained_nets.find_seed_dirs(args.path)[0]) / "report"
        result = predict.predict(args.path, data_dir=args.data_dir, metric=args.metric,
                                 batch_size=args.batch_size, max_examples=args.max_examples,
                                 recompute=args.recompute,
                                 similarity_root=out / "analysis" if args.out else None)
        files = predict.write_predict(result, out)
        pooled = result["pooled"]
        print("| n | cut point | CKA(baseA, baseB) | relative drop of AnB |\n|---|---|---|---|")
        for n, name, c, d in zip(pooled["n"], pooled["layers"], pooled["cka"],
                                 pooled["relative_drop"]):
            print(f"| {n} | {name} | {outputs.fmt(c)} | {outputs.fmt(d)} |")
        if result["spearman"]:
            for name, key in (("CKA", "spearman"), ("depth alone", "spearman_depth")):
                print(f"[analyze] Spearman rho, {name} vs the drop: "
                      f"{outputs.fmt(result[key]['rho'])}, {result[key]['p_value_method']} p "
                      f"{result[key]['p_value']}")
            print(f"[analyze] better predictor of the drop (larger |rho|): "
                  f"{result['better_predictor']}")
        else:
            print(f"[analyze] note: {result['note']}")
        for path in files.values():
            print(f"[analyze] wrote {path}")
    else:
        for path in filters.write_filters(args.runs, args.out, args.data_dir):
            print(f"[analyze] wrote {path}")
    return 0


def run() -> None:
    """Console entry point (`keras-transfer-analyze`)."""
    stopping.catch_interrupts()  # as main does: a Ctrl-C a library swallows is still seen
    try:
        sys.exit(main())
    except trained_nets.AnalysisError as e:
        print(f"analyze: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Exception) as error:
        stopping.exit_if_interrupted(error, INTERRUPTED)
        raise


if __name__ == "__main__":
    run()
