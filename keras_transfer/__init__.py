"""How transferable the features of each layer are (Yosinski et al. 2014).

The top-level modules train one net of the transfer grid (`python -m keras_transfer.main`);
the subpackages run the paper's grid of nets (`grid`), turn finished runs into its findings,
table and figures (`report`) and look inside trained nets (`analyze`). docs/architecture.md
shows how they fit together.
"""
__version__ = "0.1.0"
