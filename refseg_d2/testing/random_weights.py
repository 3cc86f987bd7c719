"""
Random-weight checkpoints in the official formats, for offline runs and tests.

They let the whole pipeline, weight loading included, run where no pretrained weights exist:
the real SAM 2 and DINOv2 architectures are built at a seeded random initialisation and written
exactly as the official files are (SAM 2: ``{"model": state_dict}``; DINOv2: the plain state
dict). Results with them are meaningless; only the plumbing is exercised.
"""
import logging
import os

import torch

from ..modeling.encoders import DinoV2Encoder
from ..modeling.proposals import build_sam2_model

logger = logging.getLogger(__name__)


@torch.no_grad()
def make_sam2_prompt_sensitive(sam):
    """
    Deterministic edits of a randomly initialised SAM 2 so that its masks and predicted IoUs
    depend on the prompt (at plain random init the learned output tokens swamp the prompt and
    every point gives the same mask with IoU ~0.5): shrink the output tokens and point
    embeddings, make every token-to-image attention use its query projection as key projection
    (so a point attends to similar image features), and spread the IoU head's outputs.
    """
    dec = sam.sam_mask_decoder
    for emb in (dec.iou_token, dec.mask_tokens, getattr(dec, "obj_score_token", None)):
        if emb is not None:
            emb.weight.mul_(0.1)
    for emb in sam.sam_prompt_encoder.point_embeddings:
        emb.weight.mul_(0.1)
    attns = [layer.cross_attn_token_to_image for layer in dec.transformer.layers]
    attns.append(dec.transformer.final_attn_token_to_image)
    for attn in attns:
        attn.k_proj.weight.copy_(attn.q_proj.weight)
        attn.k_proj.bias.zero_()
        attn.q_proj.bias.zero_()
    last = dec.iou_prediction_head.layers[-1]
    last.weight.mul_(20.0)
    last.bias.sub_(1.5)


def write_random_checkpoints(
    out_dir, sam2_config, encoder_name, sam2_input_size=1024, seed=0, prompt_sensitive=True
):
    """
    Write a random SAM 2 and a random DINOv2 checkpoint in their official formats.

    Args:
        out_dir (str): folder to write into (created).
        sam2_config (str): sam2 package config, e.g. "configs/sam2/sam2_hiera_t.yaml".
        encoder_name (str): e.g. "dinov2_vits14".
        sam2_input_size (int): input size the SAM 2 model is built at (weights do not depend on it).
        seed (int): initialisation seed.
        prompt_sensitive (bool): apply :func:`make_sam2_prompt_sensitive`.
    Returns:
        (sam2_path, encoder_path)
    """
    os.makedirs(out_dir, exist_ok=True)
    sam = build_sam2_model(sam2_config, "", sam2_input_size, random_init=True, seed=seed)
    if prompt_sensitive:
        make_sam2_prompt_sensitive(sam)
    stem = os.path.splitext(os.path.basename(sam2_config))[0]
    sam_path = os.path.join(out_dir, "random_{}.pt".format(stem))
    torch.save({"model": sam.state_dict()}, sam_path)

    encoder = DinoV2Encoder(encoder_name, "", 518, random_init=True, seed=seed)
    enc_path = os.path.join(out_dir, "random_{}_pretrain.pth".format(encoder_name))
    torch.save(encoder.backbone.state_dict(), enc_path)
    logger.warning("Wrote RANDOM-WEIGHT checkpoints %s and %s", sam_path, enc_path)
    return sam_path, enc_path
