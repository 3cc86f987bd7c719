"""Reading images as the reference does (PIL, RGB) and mask images, with errors that name the file."""
import os

import numpy as np
from PIL import Image, ImageOps

from .masks import binary_mask

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path):
    """Whether ``path`` has an image file extension."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def read_rgb(file_name, apply_exif=False):
    """Read an image file as an RGB PIL image (any mode is converted)."""
    try:
        with open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
    except FileNotFoundError as e:
        raise FileNotFoundError("Image file not found: {}".format(file_name)) from e
    except Exception as e:
        raise IOError("Cannot read image {}: {}".format(file_name, e)) from e
    if apply_exif:
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def image_size(file_name, apply_exif=False):
    """(width, height) of an image file from its header, after EXIF orientation if asked."""
    try:
        with Image.open(file_name) as image:
            if apply_exif:
                return ImageOps.exif_transpose(image).size
            return image.size
    except FileNotFoundError as e:
        raise FileNotFoundError("Image file not found: {}".format(file_name)) from e
    except Exception as e:
        raise IOError("Cannot read image {}: {}".format(file_name, e)) from e


def read_mask(file_name):
    """
    Read a mask image (any mode, as grey levels) as an (H, W) bool array by the rule of
    :func:`refseg_d2.utils.masks.binary_mask` (two levels: non-zero = object; more: >= 128).
    """
    try:
        with Image.open(file_name) as image:
            grey = np.array(image.convert("L"))
    except FileNotFoundError as e:
        raise FileNotFoundError("Mask file not found: {}".format(file_name)) from e
    except Exception as e:
        raise IOError("Cannot read mask {}: {}".format(file_name, e)) from e
    return binary_mask(grey, file_name)
