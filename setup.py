#!/usr/bin/env python
"""refseg_d2: training-free reference-based instance segmentation for Detectron2."""
from setuptools import find_packages, setup

setup(
    name="refseg_d2",
    version="0.1.0",
    description="Training-free reference-based instance segmentation (No Time to Train) for Detectron2",
    packages=find_packages(exclude=("configs", "tests", "tools")),
    # The published baseline numbers drawn next to sweep results (refseg_d2/reporting).
    package_data={"refseg_d2.reporting": ["baselines.json"]},
    python_requires=">=3.9",
    # What refseg_d2 imports, as requirements that resolve in an environment that already holds
    # torch, Detectron2 and sam2 (a plain `pip install -e .` changes none of them). Not declared,
    # because their own metadata cannot resolve there (docs/INSTALL.md):
    # - detectron2: no official PyPI release (tools/install_detectron2.sh);
    # - dinov2==0.0.1.dev2 (DINOv2's model code): its metadata pins torch 2.0 and xformers;
    #   install it with `pip install --no-deps dinov2==0.0.1.dev2` (building a model without it
    #   is an error naming that command);
    # - lvis==0.5.3 (LVIS v1 evaluation only): it asks for opencv-python, which clashes with
    #   the headless build; `pip install --no-deps lvis==0.5.3`.
    install_requires=[
        "torch>=2.1",
        "torchvision",
        # refseg_d2 calls SAM 2 internals of this exact release (checked at model build).
        "sam2==1.1.0",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.10,<0.1.11",
        "hydra-core>=1.3.2",
        "pycocotools>=2.0.7",
        # MODEL.REFSEG.EVAL.COCO_IMPL faster_coco_eval (the default COCOeval).
        "faster-coco-eval>=1.8.0",
        "opencv-python-headless",
        # Sweep figures (results.png / .svg) and the run report; Detectron2's Visualizer too.
        "matplotlib",
        "Pillow",
        "numpy",
        "tabulate",
        "tqdm",
    ],
    extras_require={"dev": ["pytest"]},
)
