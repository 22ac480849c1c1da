"""The whole experiment from Python, on tiny synthetic data: prepare a class split, train a
small grid of nets, load their results, write the report and print the paper's findings.

    python docs/examples/from_python.py     # about 2 minutes on 2 cores; writes data/, runs/

It checks the plumbing, not the paper: a few steps of the small network learn next to nothing,
and with one split the findings have no intervals yet. For real numbers, prepare Fashion-MNIST
(`source="fashion_mnist"`), drop the tiny settings and give `splits=[0, 1, 2, 3]`, as
`./launch.sh demo` does. The same calls work in a notebook; help(kt.run_grid) and the other
functions' help say what they accept.
"""
import keras_transfer as kt

DATA, RUNS = "data", "runs"
# main's flags for every net: the synthetic dataset and a schedule of a few steps.
TINY_NETS = dict(data_dir=DATA, dataset="synthetic", model="small", batch_size=8, steps=8,
                 eval_every=4, eval_steps=2, lr_step=0, eval_last=0)


def main():
    split = kt.prepare_data(source="synthetic", split="random:0", out=DATA,
                            synthetic_num_classes=10, synthetic_train_per_class=24,
                            synthetic_validation_per_class=8)
    print(f"prepared {split}")

    # baseA and baseB, then BnB, BnB+, AnB and AnB+ for n = 1 and 4, all on half B.
    grid = kt.run_grid(splits=[0], experiments=["transfer"], targets=["B"], layers=[1, 4],
                       jobs=2, workdir=RUNS, **TINY_NETS)
    print(grid)
    if not grid.ok:
        raise SystemExit("some nets did not finish; their logs say why")

    results = kt.load_results(RUNS)
    print(results[["run", "condition", "n", "top1_final"]].to_string(index=False))

    report = kt.make_report(RUNS)
    print(f"report: {report.folder}")
    print(report.findings[["effect", "mean", "low", "high", "verdict"]].to_string(index=False))


if __name__ == "__main__":  # worker processes that data_prep spawns import this file again
    main()
