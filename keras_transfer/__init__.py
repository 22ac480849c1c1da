"""How transferable the features of each layer are (Yosinski et al. 2014).

The top-level modules train one net of the transfer grid (`python -m keras_transfer.main`);
the subpackages run the paper's grid of nets (`grid`), turn finished runs into its findings,
table and figures (`report`) and look inside trained nets (`analyze`). docs/architecture.md
shows how they fit together.

From Python (`keras_transfer.api`, whose help() says more):

    import keras_transfer as kt
    kt.prepare_data(source="synthetic", split="random:0", out="data")
    kt.run_grid(splits=[0], workdir="runs", data_dir="data", dataset="synthetic", steps=40)
    results = kt.load_results("runs")
    print(kt.make_report("runs").findings)
"""
__version__ = "0.1.0"

# The Python API, loaded on first use (PEP 562): importing the package, as every one of its
# modules does, stays as cheap as this file.
API = ("prepare_data", "train_net", "run_grid", "load_results", "make_report", "Error",
       "OptionError")
__all__ = list(API)


def __getattr__(name):
    if name in API:
        from keras_transfer import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(API))
