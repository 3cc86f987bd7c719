"""
A Detectron2 detector as a class-agnostic box proposer (``PROPOSALS.SOURCE detector``): any
model Detectron2 builds from a config file or a model-zoo name (e.g. a base-class Faster R-CNN
of the FsDet/TFA or DeFRCN zoos), its weights loaded with ``DetectionCheckpointer``, run on the
original target image with the config's own test-time resize and pixel format.
"""
import logging
import os

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from ..weights import random_init_rng

logger = logging.getLogger(__name__)


def detector_config(config, device):
    """The Detectron2 config of a file path or of a model-zoo name (e.g.
    "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")."""
    if not config:
        raise ValueError("MODEL.REFSEG.PROPOSALS.SOURCE detector needs "
                         "MODEL.REFSEG.PROPOSALS.DETECTOR.CONFIG")
    path = config
    if not os.path.isfile(path):
        from detectron2 import model_zoo

        try:
            path = model_zoo.get_config_file(config)
        except RuntimeError as e:
            raise ValueError("MODEL.REFSEG.PROPOSALS.DETECTOR.CONFIG {!r} is neither a file nor a "
                             "Detectron2 model-zoo config".format(config)) from e
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = device
    return cfg


class BoxDetector:
    """Boxes and scores of a Detectron2 model on one target image, at the original size."""

    def __init__(self, config, weights, output="detections", device="cpu", random_init=False):
        """
        Args:
            config (str): config file or model-zoo name; weights (str): its checkpoint.
            output (str): "detections" (final boxes and scores) or "proposals" (RPN boxes,
                sigmoid of the objectness).
            random_init (bool): allow empty ``weights`` (MODEL.REFSEG.RANDOM_INIT); the model
                is always built under seed 0, so a random one is the same in every run.
        """
        if output not in ("detections", "proposals"):
            raise ValueError("MODEL.REFSEG.PROPOSALS.DETECTOR.OUTPUT must be 'detections' or "
                             "'proposals', got {!r}".format(output))
        cfg = detector_config(config, device)
        with random_init_rng(0):
            self.model = build_model(cfg).eval()
        if weights:
            DetectionCheckpointer(self.model).load(weights)
        elif random_init:
            logger.warning("The proposal detector %s is RANDOMLY INITIALISED", config)
        else:
            raise ValueError("MODEL.REFSEG.PROPOSALS.DETECTOR.WEIGHTS is empty: set it to the "
                             "checkpoint of {}".format(config))
        if output == "proposals" and getattr(self.model, "proposal_generator", None) is None:
            raise ValueError("PROPOSALS.DETECTOR.OUTPUT proposals needs a detector with a "
                             "proposal generator; {} has none".format(config))
        self.output = output
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    def _model_input(self, image, size):
        """image (3, H, W) uint8 RGB at the original size -> the detector's input dict."""
        if tuple(image.shape[-2:]) != tuple(size):
            raise ValueError(
                "PROPOSALS.SOURCE detector runs on the original image, but the target input is "
                "{}x{} for an image of {}x{}: set MODEL.REFSEG.SAM2.INTERFACE image_predictor "
                "(targets at their own size)".format(*image.shape[-2:], *size))
        array = image.permute(1, 2, 0).cpu().numpy()
        if self.input_format == "BGR":
            array = array[:, :, ::-1]
        array = self.resize.get_transform(array).apply_image(np.ascontiguousarray(array))
        tensor = torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return {"image": tensor, "height": size[0], "width": size[1]}

    @torch.no_grad()
    def __call__(self, inputs, size):
        """
        Args:
            inputs (dict): a mapped target with "image" (3, H, W) uint8 RGB.
            size: (H, W).
        Returns:
            (n, 4) float64 XYXY boxes in original pixels and (n,) float64 scores.
        """
        batched = [self._model_input(inputs["image"], size)]
        if self.output == "detections":
            found = self.model(batched)[0]["instances"]
        else:
            images = self.model.preprocess_image(batched)
            features = self.model.backbone(images.tensor)
            proposals, _ = self.model.proposal_generator(images, features, None)
            found = Instances(proposals[0].image_size)
            found.pred_boxes = proposals[0].proposal_boxes
            found.scores = proposals[0].objectness_logits.sigmoid()
            found = detector_postprocess(found, size[0], size[1])
        return found.pred_boxes.tensor.double().cpu(), found.scores.double().cpu()
