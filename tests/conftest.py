"""Shared fixtures: tiny random-weight checkpoints in the official formats, synthetic datasets."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tools"))   # the tools that import each other

SAM2_CONFIG = "configs/sam2/sam2_hiera_t.yaml"
ENCODER = "dinov2_vits14"


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """(sam2_path, dinov2_path): random Hiera-T and ViT-S/14 written as the official files."""
    from refseg_d2.testing.random_weights import write_random_checkpoints

    out = tmp_path_factory.mktemp("weights")
    return write_random_checkpoints(str(out), SAM2_CONFIG, ENCODER, sam2_input_size=256, seed=0)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """
    COCO-format splits with categories 3, 7, 12: "refs" (references, masks), "refs_boxes"
    (some references box-only) and "targets" (overlapping instances, last image empty).
    Returns {split: (json_path, image_root)}.
    """
    from refseg_d2.testing.synthetic import make_split

    root = str(tmp_path_factory.mktemp("data"))
    return {
        "refs": make_split(root, "refs", 6, seed=0, overlap_every=0),
        "refs_boxes": make_split(root, "refs_boxes", 6, seed=2, overlap_every=0, box_only_every=2,
                                 first_image_id=51),
        "targets": make_split(root, "targets", 5, seed=1, empty_images=1, first_image_id=101),
    }
