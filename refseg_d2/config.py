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
    # Upsample this many masks at a time to the original image size (bounds peak memory only).
    _C.MODEL.REFSEG.UPSAMPLE_CHUNK = 64

    # The memory bank of reference prototypes.
    _C.MODEL.REFSEG.MEMORY = CN()
    # Reference crop: a square of side (1 + CONTEXT_RATIO) * longer box side, clipped to the image.
    _C.MODEL.REFSEG.MEMORY.CONTEXT_RATIO = 0.2
    # Where references with a box but no mask get their mask: "sam2" (box prompt) or "box"
    # (the filled box rectangle).
    _C.MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE = "sam2"
    # Reference images per loader batch while filling the memory.
    _C.MODEL.REFSEG.MEMORY.IMAGES_PER_BATCH = 1
    # Save the filled memory to OUTPUT_DIR/<MEMORY.SAVE_NAME>.pth (main process only).
    _C.MODEL.REFSEG.MEMORY.SAVE = True
    _C.MODEL.REFSEG.MEMORY.SAVE_NAME = "refseg_memory"

    # Cache of the reference-independent proposals (SAM 2 masks, pooled DINOv2 features) of
    # each target image, for sweeps over shots and seeds. Cached runs give identical predictions.
    _C.MODEL.REFSEG.CACHE = CN()
    _C.MODEL.REFSEG.CACHE.ENABLED = False
    # Folder of the cache; empty: OUTPUT_DIR/proposal_cache. Share it between the runs of a sweep.
    _C.MODEL.REFSEG.CACHE.DIR = ""

    # Accelerator paths. Off by default: the faithful path is fp32, one image at a time.
    _C.MODEL.REFSEG.ACCEL = CN()
    # Autocast the SAM 2 and DINOv2 forwards: "" (fp32), "bf16" or "fp16" (CUDA).
    _C.MODEL.REFSEG.ACCEL.AMP = ""
    # torch.compile the DINOv2 backbone and the SAM 2 image encoder.
    _C.MODEL.REFSEG.ACCEL.COMPILE = False
    # Target images per test-loader batch; DINOv2 then encodes them in one batch.
    _C.MODEL.REFSEG.ACCEL.IMAGES_PER_BATCH = 1

    # Input reading. Deviations from the reference are off by default.
    _C.MODEL.REFSEG.INPUT = CN()
    # Apply the EXIF orientation tag when reading images (the reference ignores it).
    _C.MODEL.REFSEG.INPUT.APPLY_EXIF = False

    # Registered dataset(s) whose annotations are the references (one shot per annotation).
    # Several names are concatenated; they must share one category list.
    _C.DATASETS.REFERENCE = ()
