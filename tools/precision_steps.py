#!/usr/bin/env python
"""
Which steps of SAM 2 prompting move the proposals in reduced precision: each step alone under a
plain autocast (the rest in fp32), then all of them, against fp32, on a point grid over synthetic
targets. The steps: the image encoder; the prompt encoder with the decoder's image-side
projections (``SAM2Prompter._prepare_shared``); the decoder's two-way transformer; the mask
upscaling and its product with the hypernetwork outputs. Per row: the largest change of a predicted IoU, the
predicted-IoU threshold decisions and best-of-3 choices that flip, and the masks (at the mask
grid) whose IoU with fp32 is below 0.98, with the lowest IoU.

    python tools/precision_steps.py --output DIR [--points-per-side 16] [--images 3] [--dtype bf16]

Random SAM 2 Hiera-T weights in the official format, made prompt-sensitive
(``refseg_d2.testing.random_weights``); synthetic 640 x 480 targets squashed to the input size.
The result decided which steps ``MODEL.REFSEG.ACCEL.AMP`` keeps in fp32 (docs/SPEED.md,
"Precision").
"""
import argparse
import os

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate

from refseg_d2.modeling.precision import AMP_DTYPES, to_fp32
from refseg_d2.modeling.proposals.sam2_prompter import SAM2Prompter, build_sam2_model
from refseg_d2.testing.random_weights import write_random_checkpoints
from refseg_d2.testing.synthetic import make_split

STEPS = ("image encoder", "prompt encoder + image-side projections", "two-way transformer",
         "mask upscaling")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder of the weights and images")
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--images", type=int, default=3, help="synthetic targets")
    p.add_argument("--input-size", type=int, default=1024, help="SAM 2 input size")
    p.add_argument("--dtype", default="bf16", choices=[k for k in AMP_DTYPES if k])
    p.add_argument("--iou-thresh", type=float, default=0.4, help="PRED_IOU_THRESH")
    return p.parse_args(argv)


def _autocast(dtype, on):
    return torch.autocast("cpu", dtype=dtype, enabled=on)


def decode(prompter, image, dtype, low):
    """
    Every prompt of the grid decoded with the steps in ``low`` under autocast to ``dtype``.
    Returns (logits (P, h, w) fp32, predicted IoUs (P,), best-of-3 choice (P,)).
    """
    shared = prompter.shared
    transformer, upscale = shared._transformer, shared._upscale

    def stage(fn, step):
        def run(*args):
            with _autocast(dtype, step in low):
                return to_fp32(fn(*(args if step in low else to_fp32(args))))
        return run

    with torch.no_grad():
        with _autocast(dtype, STEPS[0] in low):
            embedding, high_res = prompter.encode_image(image)
        with _autocast(dtype, STEPS[1] in low):
            if STEPS[1] not in low:
                embedding, high_res = embedding.float(), [h.float() for h in high_res]
            points = prompter.grid[:, None, :]
            labels = torch.ones(points.shape[:2], dtype=torch.int32)
            sparse, _ = prompter.sam.sam_prompt_encoder(points=(points, labels), boxes=None, masks=None)
            ctx = prompter._prepare_shared(embedding, high_res)
        shared.transformer_stage, shared.upscale_stage = stage(transformer, STEPS[2]), stage(upscale, STEPS[3])
        try:
            logits, ious, _, best = shared.decode_multimask(ctx, sparse, float("-inf"))
        finally:
            shared.transformer_stage, shared.upscale_stage = transformer, upscale
    return logits.float(), ious.float(), best


def compare(reference, other, thresh):
    """One row of figures for ``other`` against ``reference`` (both from :func:`decode`)."""
    (ref_logits, ref_ious, ref_best), (logits, ious, best) = reference, other
    kept_ref, kept = ref_ious > thresh, ious > thresh
    both = kept_ref & kept & (best == ref_best)
    a, b = ref_logits[both] > 0, logits[both] > 0
    iou = (a & b).sum((1, 2)).float() / (a | b).sum((1, 2)).clamp(min=1).float()
    return {"max_iou_change": float((ious - ref_ious).abs().max()),
            "threshold_flips": int((kept != kept_ref).sum()),
            "best_of_3_flips": int((best != ref_best).sum()),
            "masks_below_0.98": int((iou < 0.98).sum()),
            "min_mask_iou": float(iou.min()) if len(iou) else 1.0,
            "kept": int(kept_ref.sum())}


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    sam_path, _ = write_random_checkpoints(os.path.join(args.output, "weights"),
                                           "configs/sam2/sam2_hiera_t.yaml", "dinov2_vits14",
                                           args.input_size, seed=0)
    sam = build_sam2_model("configs/sam2/sam2_hiera_t.yaml", sam_path, args.input_size)
    prompter = SAM2Prompter(sam, args.points_per_side, args.points_per_side ** 2,
                            args.iou_thresh, "shared").eval()
    json_path, root = make_split(os.path.join(args.output, "data"), "targets", args.images, seed=1,
                                 size=(640, 480), first_image_id=101)
    dtype = AMP_DTYPES[args.dtype]
    rows = [[step] for step in STEPS] + [["all of them"]]
    totals = [None] * len(rows)
    for name in sorted(os.listdir(root)):
        image = Image.open(os.path.join(root, name)).convert("RGB")
        image = image.resize((args.input_size,) * 2, Image.BICUBIC)
        x = prompter.prepare_image(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        reference = decode(prompter, x, dtype, ())
        for i, low in enumerate([(step,) for step in STEPS] + [STEPS]):
            got = compare(reference, decode(prompter, x, dtype, low), args.iou_thresh)
            totals[i] = got if totals[i] is None else {
                k: (max if k == "max_iou_change" else min if k == "min_mask_iou" else sum)(
                    (totals[i][k], v)) for k, v in got.items()}
    headers = ["in {} (the rest fp32)".format(args.dtype)] + list(totals[0])
    table = [row + ["{:.4f}".format(v) if isinstance(v, float) else v for v in t.values()]
             for row, t in zip(rows, totals)]
    print("{} targets, {} x {} grid, {} px".format(args.images, args.points_per_side,
                                                     args.points_per_side, args.input_size))
    print(tabulate(table, headers=headers, tablefmt="pipe"))
    return dict(zip([r[0] for r in rows], totals))


if __name__ == "__main__":
    main()
