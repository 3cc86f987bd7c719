"""Configuration keys of refseg_d2. Defaults reproduce the paper ("No Time to Train!")."""
from detectron2.config import CfgNode as CN


def add_refseg_config(cfg):
    """
    Add the refseg_d2 keys to a Detectron2 config. Call it before ``merge_from_file``.
    """
    _C = cfg
    _C.MODEL.REFSEG = CN()
    # Allow building the foundation models at random initialisation when a WEIGHTS key is
    # empty (tests, offline smoke runs). When False, missing weights are an error.
    _C.MODEL.REFSEG.RANDOM_INIT = False
    # Seed of the random initialisation (identical weights on every process).
    _C.MODEL.REFSEG.RANDOM_INIT_SEED = 0

    # The semantic encoder (frozen DINOv2), used for references and targets.
    _C.MODEL.REFSEG.ENCODER = CN()
    # One of REFSEG_ENCODER_REGISTRY: dinov2_vits14, dinov2_vitb14, dinov2_vitl14, dinov2_vitg14.
    _C.MODEL.REFSEG.ENCODER.NAME = "dinov2_vitl14"
    # Path to the official checkpoint, e.g. checkpoints/dinov2_vitl14_pretrain.pth.
    _C.MODEL.REFSEG.ENCODER.WEIGHTS = ""
    # Side of the square encoder input (a multiple of the patch size 14).
    _C.MODEL.REFSEG.ENCODER.INPUT_SIZE = 518

    # The class-agnostic proposal model (frozen SAM 2).
    _C.MODEL.REFSEG.SAM2 = CN()
    # A config shipped in the sam2 package (the paper used SAM 2 Hiera-L, v1 weights).
    _C.MODEL.REFSEG.SAM2.CONFIG = "configs/sam2/sam2_hiera_l.yaml"
    # Path to the official checkpoint, e.g. checkpoints/sam2_hiera_large.pt.
    _C.MODEL.REFSEG.SAM2.WEIGHTS = ""
    # Side of the square SAM 2 input: every target image is squashed (no aspect kept) to it.
    _C.MODEL.REFSEG.SAM2.INPUT_SIZE = 1024
    # Prompt decoder: "official" (SAM 2's MaskDecoder per batch of POINTS_PER_BATCH prompts, as
    # the reference runs it) or "shared" (the same modules and weights; image-side work done
    # once per image, masks upscaled only for kept prompts; equal up to float rounding).
    _C.MODEL.REFSEG.SAM2.DECODER = "official"
    # "shared" decoder: prompts whose per-prompt image tokens are held at once (memory only).
    _C.MODEL.REFSEG.SAM2.DECODER_CHUNK = 32

    # Point grid: POINTS_PER_SIDE^2 positive point prompts per target image, edges included.
    _C.MODEL.REFSEG.POINTS_PER_SIDE = 32
    # Prompts decoded together (any value works; the last batch may be partial).
    _C.MODEL.REFSEG.POINTS_PER_BATCH = 256
    # Keep a proposal when SAM 2's predicted IoU is strictly above this.
    _C.MODEL.REFSEG.PRED_IOU_THRESH = 0.4
    # Box IoU threshold of the class-aware NMS (boxes of the low-resolution masks).
    _C.MODEL.REFSEG.NMS_THRESH = 0.5
    # Detections per image after soft merging.
    _C.MODEL.REFSEG.MAX_DETECTIONS = 100
    # NMS keeps at most NMS_KEEP_FACTOR * MAX_DETECTIONS masks (the reference's x8 cap).
    _C.MODEL.REFSEG.NMS_KEEP_FACTOR = 8
    # Exponent of the semantic-aware soft-merging decay: score * (1 - IoS * cos)^EXPONENT.
    _C.MODEL.REFSEG.MERGE_EXPONENT = 0.5
    # Upsample this many masks at a time to the original image size, fewer when they would
    # exceed 2^25 output pixels (bounds peak memory only).
    _C.MODEL.REFSEG.UPSAMPLE_CHUNK = 64

    # The memory bank of reference prototypes.
    _C.MODEL.REFSEG.MEMORY = CN()
    # Reference crop: a square of side (1 + CONTEXT_RATIO) * longer box side, clipped to the image.
    _C.MODEL.REFSEG.MEMORY.CONTEXT_RATIO = 0.2
    # Where references with a box but no mask get their mask: "sam2" (box prompt) or "box"
    # (the filled box rectangle).
    _C.MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE = "sam2"
    # Reference crops encoded together by DINOv2 (bounds memory whatever the number of
    # annotations of an image; 0: all crops of an image at once). Features do not depend on it.
    # Identical copies of an annotation in an image are encoded once.
    _C.MODEL.REFSEG.MEMORY.CROPS_PER_BATCH = 16
    # Reference images per loader batch while filling the memory.
    _C.MODEL.REFSEG.MEMORY.IMAGES_PER_BATCH = 1
    # Save the filled memory to OUTPUT_DIR/<MEMORY.SAVE_NAME>.pth (main process only).
    _C.MODEL.REFSEG.MEMORY.SAVE = True
    _C.MODEL.REFSEG.MEMORY.SAVE_NAME = "refseg_memory"

    # Full-size masks of the kept proposals (soft merging needs their areas and intersections).
    # Identical results either way; only speed and memory differ.
    _C.MODEL.REFSEG.FULL_MASKS = CN()
    # "dense": all kept masks at full size at once (n x H x W bytes; fast on a GPU); "streamed":
    # upsampled a chunk at a time and reduced to areas and run-length encodings, only the final
    # top-k at full size (bounded memory at any image size; faster on a CPU); "auto": dense on
    # CUDA when n x H x W <= DENSE_MAX_PIXELS, streamed otherwise.
    _C.MODEL.REFSEG.FULL_MASKS.MODE = "auto"
    _C.MODEL.REFSEG.FULL_MASKS.DENSE_MAX_PIXELS = 1 << 28
    # The disk proposal cache is gone (a one-pass sweep computes each image's proposals once):
    # its keys are ignored, with a warning, in old configs.
    for key in ("MODEL.REFSEG.CACHE", "MODEL.REFSEG.CACHE.ENABLED", "MODEL.REFSEG.CACHE.DIR"):
        _C.register_deprecated_key(key)

    # Accelerator paths. Off by default: the faithful path is fp32, one image at a time.
    _C.MODEL.REFSEG.ACCEL = CN()
    # Autocast the SAM 2 and DINOv2 forwards: "" (fp32), "bf16" or "fp16" (CUDA).
    _C.MODEL.REFSEG.ACCEL.AMP = ""
    # torch.compile what runs: DINOv2's forward_features, the SAM 2 image encoder and (shared
    # decoder) its per-chunk transformer and upscaling stages, at fixed shapes.
    _C.MODEL.REFSEG.ACCEL.COMPILE = False
    # torch.compile backend ("inductor"; "eager" / "aot_eager" trace without code generation).
    _C.MODEL.REFSEG.ACCEL.COMPILE_BACKEND = "inductor"
    # Allow TF32 in CUDA matmuls and convolutions (no effect on CPU).
    _C.MODEL.REFSEG.ACCEL.TF32 = False
    # Target images per test-loader batch; DINOv2 then encodes them in one batch.
    _C.MODEL.REFSEG.ACCEL.IMAGES_PER_BATCH = 1

    # Evaluation.
    _C.MODEL.REFSEG.EVAL = CN()
    # COCOeval implementation of the COCO-style evaluators: "pycocotools" (the official one, as
    # the authors), "detectron2" (Detectron2's compiled one, when built) or "faster_coco_eval"
    # (the faster-coco-eval package). Same numbers; the last two are faster on large test sets.
    _C.MODEL.REFSEG.EVAL.COCO_IMPL = "pycocotools"

    # Input reading. Deviations from the reference are off by default.
    _C.MODEL.REFSEG.INPUT = CN()
    # Apply the EXIF orientation tag when reading images (the reference ignores it).
    _C.MODEL.REFSEG.INPUT.APPLY_EXIF = False

    # Registered dataset(s) whose annotations are the references (one shot per annotation).
    # Several names are concatenated; they must share one category list.
    _C.DATASETS.REFERENCE = ()


# Checks of the values of MODEL.REFSEG.*: key -> (test, what the value must be).
_IN_UNIT_INTERVAL = (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_POSITIVE_INT = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
_CHECKS = {
    "PRED_IOU_THRESH": _IN_UNIT_INTERVAL,
    "NMS_THRESH": _IN_UNIT_INTERVAL,
    "POINTS_PER_SIDE": _POSITIVE_INT,
    "POINTS_PER_BATCH": _POSITIVE_INT,
    "MAX_DETECTIONS": _POSITIVE_INT,
    "NMS_KEEP_FACTOR": _POSITIVE_INT,
    "UPSAMPLE_CHUNK": _POSITIVE_INT,
    "MERGE_EXPONENT": _NON_NEGATIVE,
    "MEMORY.CONTEXT_RATIO": _NON_NEGATIVE,
    "MEMORY.IMAGES_PER_BATCH": _POSITIVE_INT,
    "MEMORY.CROPS_PER_BATCH": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "MEMORY.BOX_MASK_SOURCE": (lambda v: v in ("sam2", "box"), "one of 'sam2', 'box'"),
    "FULL_MASKS.MODE": (lambda v: v in ("auto", "dense", "streamed"),
                        "one of 'auto', 'dense', 'streamed'"),
    "FULL_MASKS.DENSE_MAX_PIXELS": _POSITIVE_INT,
    "ACCEL.AMP": (lambda v: v in ("", "bf16", "fp16"), "one of '', 'bf16', 'fp16'"),
    "ACCEL.IMAGES_PER_BATCH": _POSITIVE_INT,
    "EVAL.COCO_IMPL": (lambda v: v in ("pycocotools", "detectron2", "faster_coco_eval"),
                       "one of 'pycocotools', 'detectron2', 'faster_coco_eval'"),
    "ENCODER.INPUT_SIZE": (
        lambda v: isinstance(v, int) and v >= 14 and v % 14 == 0,
        "a multiple of the DINOv2 patch size 14",
    ),
    "SAM2.INPUT_SIZE": (
        lambda v: isinstance(v, int) and v >= 64 and v % 32 == 0,
        "a multiple of 32 (SAM 2's image encoder strides), at least 64",
    ),
    "RANDOM_INIT_SEED": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
}


def check_refseg_config(cfg):
    """
    Raise ValueError naming the key, its value and what it must be, for the first
    ``MODEL.REFSEG`` value out of range (thresholds in [0, 1], positive counts, sizes the
    models accept, known names). Called when the model is built.
    """
    for key, (test, allowed) in _CHECKS.items():
        node = cfg.MODEL.REFSEG
        for part in key.split("."):
            node = node[part]
        valid = False
        if not isinstance(node, bool):
            try:
                valid = bool(test(node))
            except TypeError:
                valid = False
        if not valid:
            raise ValueError(
                "MODEL.REFSEG.{} = {!r} is out of range: it must be {}".format(key, node, allowed)
            )
