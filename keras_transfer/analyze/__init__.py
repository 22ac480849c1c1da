"""Looks at trained nets without training more of them: layer similarity, its use as a cheap
predictor of the transfer curve, and the filters of the first convolution.

    python -m keras_transfer.analyze similarity --a RUN_A --b RUN_B --data HALF_DIR
    python -m keras_transfer.analyze predict WORKDIR[/<dataset>/<split_dir>/seed<k>]
    python -m keras_transfer.analyze filters RUN [RUN ...]

`similarity` streams the validation images of HALF_DIR through both nets in minibatches and
accumulates linear CKA (unbiased HSIC_1, Nguyen et al. 2021; see `cka`) of every cut point of A
against every cut point of B (the outputs of conv1..fc7 for CaffeNet, of the stem and the blocks
for a ResNet: `models.Architecture`); A and B must be nets of one model. Memory is one batch's
activations and Gram matrices. Both nets read the images with their own crop and input scale
but the same examples in the same order; every batch is checked, and a difference in order or
count is refused. Writes similarity.json, similarity.png (the cut point x cut point heatmap) and
TensorBoard events into WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/similarity/
<A>_vs_<B>_on_<dataset>-<split_dir>-<half>/ (or --out): a folder per pair of nets and data, B
named with its dataset, split and seed when it is not in A's seed folder
(`similarity.default_similarity_out`).

`predict` computes CKA(baseA, baseB) at cut points n = 1..k of the nets' model for every
finished base pair and compares it with the measured relative drop of the frozen transfer nets,
(base - AnB) / base per n (BnA against baseA likewise), pooled over directions and seeds (all of
one model), by Spearman rank correlation. Writes predict.json and predict.png into
WORKDIR/report/ beside the report (or --out).

`filters` writes the filters of each net's first convolution (conv1 of CaffeNet) as one image
grid (`filter_images.filter_grid`), a PNG per net and a TensorBoard image, into
WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/filters/.

Every output file or folder is written in full elsewhere and renamed into place; bad input
(missing run, weights that do not fit, data of another shape) is reported before anything is
written. Command line via argparse, as in `report`: main's absl flags are the package's one
absl namespace.

Modules: `trained_nets` (finished runs, their data, where analysis outputs go), `cka` (the
estimators), `similarity`, `predict`, `filters`; `__main__` is the command line only.
"""
_COMMAND_LINE = ("main", "parser", "run")


def __getattr__(name):
    # The command line is imported on first use, so `from keras_transfer.analyze import cka`
    # does not load argparse and every analysis module.
    if name in _COMMAND_LINE:
        from keras_transfer.analyze import __main__ as command_line
        return getattr(command_line, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
