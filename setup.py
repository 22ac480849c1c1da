"""keras_transfer: how transferable are the features of each layer (Yosinski et al. 2014)."""
from setuptools import find_packages, setup

setup(
    name="keras_transfer",
    version="0.1.0",
    description=("Layer-by-layer transferability of CaffeNet features "
                 "(Yosinski et al. 2014) in TensorFlow 2 / Keras 3"),
    python_requires=">=3.11",
    packages=find_packages(include=["data_prep", "data_prep.*",
                                    "keras_transfer", "keras_transfer.*"]),
    # The authors' per-net results, read by `python -m keras_transfer.report --paper`.
    package_data={"keras_transfer.report": ["data/yosinski2014_nets.csv",
                                            "data/yosinski2014_nets.md"]},
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        # tensorflow-datasets imports it on Python 3.11 but does not declare it.
        "importlib-resources==7.1.0",
        "absl-py==2.5.1",
        "tensorboard==2.21.0",
        "numpy==2.4.6",
        "pandas==3.1.1",
        "pillow==13.0.0",
        "matplotlib==3.11.2",
        "scipy==1.17.1",
        "tqdm==4.70.1",
    ],
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0"]},
    entry_points={
        "console_scripts": [
            "data-prep=data_prep.__main__:run",
            "keras-transfer=keras_transfer.main:run",
            "keras-transfer-report=keras_transfer.report.__main__:run",
            "keras-transfer-analyze=keras_transfer.analyze.__main__:run",
        ],
    },
)
