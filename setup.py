#!/usr/bin/env python
"""refseg_d2: training-free reference-based instance segmentation for Detectron2."""
from setuptools import find_packages, setup

setup(
    name="refseg_d2",
    version="0.1.0",
    description="Training-free reference-based instance segmentation (No Time to Train) for Detectron2",
    packages=find_packages(exclude=("configs", "tests", "tools")),
    python_requires=">=3.9",
    # detectron2 has no official PyPI release: install it first (see README / tools/install_detectron2.sh).
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "sam2>=1.0",
        "fvcore>=0.1.5,<0.1.6",
        "pycocotools>=2.0.7",
        "Pillow",
        "numpy",
        "tqdm",
    ],
    extras_require={"dev": ["pytest"]},
)
