"""
Configuration keys of refseg_d2. Defaults are the paper's settings ("No Time to Train!"); the
default prompt decoder and COCOeval are the fastest exact ones (the reference's numbers up to
float rounding). Configs of earlier releases load through ``compat``.
"""
from detectron2.config import CfgNode as CN

from .compat import is_old_key, translate_old_keys

# Allowed values of the MODEL.REFSEG keys that name a choice: key -> tuple of values. Each set is
# defined next to the code that uses it, which declares it here with :func:`declare_choices`.
_CHOICES = {}


def declare_choices(key, values):
    """
    Declare the allowed values of ``MODEL.REFSEG.<key>`` (checked by
    :func:`check_refseg_config`). Returns ``values`` as a tuple.
    """
    values = tuple(values)
    _CHOICES[key] = values
    return values


class RefSegCfgNode(CN):
    """
    Detectron2's CfgNode that also loads configs written for earlier releases: a removed
    ``MODEL.REFSEG`` key is translated to its replacement (or dropped) with a warning naming
    the replacement (see ``refseg_d2.config.compat``), in files and in command-line overrides.
    """

    def merge_from_other_cfg(self, cfg_other):
        for key, value in translate_old_keys(_pop_old_keys(cfg_other), self, cfg_other):
            _set(cfg_other, key, value)
        return super().merge_from_other_cfg(cfg_other)

    def merge_from_list(self, cfg_list):
        if len(cfg_list) % 2:
            return super().merge_from_list(cfg_list)
        pairs = list(zip(cfg_list[0::2], cfg_list[1::2]))
        old = {k: self._decode_cfg_value(v) for k, v in pairs if _is_old(k, v, self)}
        given = CN()
        for k, v in pairs:
            if k not in old:
                _set(given, k, v)
        kept = [x for k, v in pairs if k not in old for x in (k, v)]
        new = [x for kv in translate_old_keys(old, self, given) for x in kv]
        return super().merge_from_list(kept + new)


def add_refseg_config(cfg):
    """
    Add the refseg_d2 keys to a Detectron2 config. Call it before ``merge_from_file``. The
    config then also loads files and overrides that set removed keys (with a warning).
    """
    _C = cfg
    _C.MODEL.REFSEG = CN()
    # Allow building the foundation models at random initialisation (fixed seed) when a WEIGHTS
    # key is empty (tests, offline smoke runs). When False, missing weights are an error.
    _C.MODEL.REFSEG.RANDOM_INIT = False

    # The semantic encoder (frozen DINOv2), used for references and targets.
    _C.MODEL.REFSEG.ENCODER = CN()
    # One of REFSEG_ENCODER_REGISTRY: dinov2_vits14, dinov2_vitb14, dinov2_vitl14, dinov2_vitg14.
    _C.MODEL.REFSEG.ENCODER.NAME = "dinov2_vitl14"
    # Path to the official checkpoint, e.g. checkpoints/dinov2_vitl14_pretrain.pth.
    _C.MODEL.REFSEG.ENCODER.WEIGHTS = ""
    # Side of the square encoder input (a multiple of the patch size 14).
    _C.MODEL.REFSEG.ENCODER.INPUT_SIZE = 518
    # Features after DINOv2's final LayerNorm (NTT) or before it (False: FSOD-VFM).
    _C.MODEL.REFSEG.ENCODER.FINAL_NORM = True
    # Attention kernel of the DINOv2 blocks: "sdpa" (fused, the default) or "official" (DINOv2's
    # own forward, for audits); the same features up to float rounding.
    _C.MODEL.REFSEG.ENCODER.ATTENTION = "sdpa"

    # The class-agnostic proposal model (frozen SAM 2).
    _C.MODEL.REFSEG.SAM2 = CN()
    # A config shipped in the sam2 package (the paper used SAM 2 Hiera-L, v1 weights).
    _C.MODEL.REFSEG.SAM2.CONFIG = "configs/sam2/sam2_hiera_l.yaml"
    # Path to the official checkpoint, e.g. checkpoints/sam2_hiera_large.pt.
    _C.MODEL.REFSEG.SAM2.WEIGHTS = ""
    # Side of the square SAM 2 input: every target image is squashed (no aspect kept) to it.
    _C.MODEL.REFSEG.SAM2.INPUT_SIZE = 1024
    # Prompt decoder: "shared" (SAM 2's modules and weights; image-side work done once per image,
    # masks upscaled only for kept prompts; faster) or "official" (SAM 2's MaskDecoder on every
    # batch of prompts, as the reference runs it). Equal proposals up to float rounding.
    _C.MODEL.REFSEG.SAM2.DECODER = "shared"
    # How SAM 2 is called: "direct" (NTT: targets squashed to INPUT_SIZE with Pillow bicubic,
    # no no_mem_embed, antialiased mask upsampling) or "image_predictor" (SAM 2's
    # SAM2ImagePredictor, as FSOD-VFM: bilinear float resize, no_mem_embed added, boxes as
    # corner points, plain bilinear mask upsampling). See docs/CONFIG.md.
    _C.MODEL.REFSEG.SAM2.INTERFACE = "direct"

    # What SAM 2 is prompted with on a target image.
    _C.MODEL.REFSEG.PROPOSALS = CN()
    # "points" (NTT's point grid), "boxes_file" (a COCO results JSON of any detector) or
    # "detector" (a Detectron2 model run on each target), see REFSEG_PROPOSAL_SOURCE_REGISTRY.
    _C.MODEL.REFSEG.PROPOSALS.SOURCE = "points"
    # COCO results JSON (image_id, bbox XYWH, score) matched to the test set by image id.
    _C.MODEL.REFSEG.PROPOSALS.BOXES_FILE = ""
    # Box selection (FSOD-VFM's): scores >= MIN_SCORE, the MAX_BOXES best after rounding the
    # scores to 2 decimals, boxes truncated to integers and clipped to the image.
    _C.MODEL.REFSEG.PROPOSALS.MIN_SCORE = 0.01
    _C.MODEL.REFSEG.PROPOSALS.MAX_BOXES = 100
    # Box prompts decoded together (speed and memory only).
    _C.MODEL.REFSEG.PROPOSALS.BOXES_PER_BATCH = 32
    _C.MODEL.REFSEG.PROPOSALS.DETECTOR = CN()
    # A Detectron2 config file or model-zoo name, e.g. COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml.
    _C.MODEL.REFSEG.PROPOSALS.DETECTOR.CONFIG = ""
    # Its checkpoint (DetectionCheckpointer formats).
    _C.MODEL.REFSEG.PROPOSALS.DETECTOR.WEIGHTS = ""
    # Its boxes used class-agnostically: "detections" (final boxes, scores) or "proposals" (RPN).
    _C.MODEL.REFSEG.PROPOSALS.DETECTOR.OUTPUT = "detections"

    # How a mask becomes a feature: "mask_grid" (NTT: reference crops with context; target
    # features upsampled to the mask grid) or "token_grid" (FSOD-VFM: whole images, masks
    # resized to the token grid), see REFSEG_POOLING_REGISTRY.
    _C.MODEL.REFSEG.POOLING = "mask_grid"

    # Point grid: POINTS_PER_SIDE^2 positive point prompts per target image, edges included.
    _C.MODEL.REFSEG.POINTS_PER_SIDE = 32
    # Prompts decoded together by either decoder (speed and memory only; lower it if the
    # prompt decoding runs out of memory; the last batch may be partial).
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
    # "drop" (NTT: cosine clamped at 0, proposals scoring 0 dropped after the NMS) or "keep"
    # (FSOD-VFM: argmax of the raw cosine, negative scores kept).
    _C.MODEL.REFSEG.NEGATIVE_SCORES = "drop"

    # De-duplication of the classified proposals, in NMS order.
    _C.MODEL.REFSEG.DEDUP = CN()
    # "soft_merge" (NTT, MERGE_EXPONENT) or "graph_diffusion" (FSOD-VFM), see REFSEG_DEDUP_REGISTRY.
    _C.MODEL.REFSEG.DEDUP.NAME = "soft_merge"
    # Masks compared: "full" (full size; a mask empty there is dropped) or "pooling" (the masks
    # on the pooling grid: the low-resolution mask grid or the token grid).
    _C.MODEL.REFSEG.DEDUP.MASKS = "full"
    # Graph diffusion: pi <- ALPHA * A pi + (1 - ALPHA) v for at most STEPS iterations (stop when
    # pi moves by < TOL); score * max(0, 1 - pi)^LAMBDA.
    _C.MODEL.REFSEG.DEDUP.ALPHA = 0.3
    _C.MODEL.REFSEG.DEDUP.LAMBDA = 0.5
    _C.MODEL.REFSEG.DEDUP.STEPS = 30
    _C.MODEL.REFSEG.DEDUP.TOL = 1e-6
    # Divide each row of A by its sum (what FSOD-VFM's code names but does not do: off).
    _C.MODEL.REFSEG.DEDUP.ROW_NORMALIZE = False

    # The memory bank of reference prototypes.
    _C.MODEL.REFSEG.MEMORY = CN()
    # Reference crop: a square of side (1 + CONTEXT_RATIO) * longer box side, clipped to the image.
    _C.MODEL.REFSEG.MEMORY.CONTEXT_RATIO = 0.2
    # Where references with a box but no mask get their mask: "sam2" (box prompt) or "box"
    # (the filled box rectangle).
    _C.MODEL.REFSEG.MEMORY.BOX_MASK_SOURCE = "sam2"
    # The mask of each reference: "annotation" (its own; box-only ones per BOX_MASK_SOURCE) or
    # "sam2_box" (SAM 2's mask of its box for every reference: FSOD-VFM).
    _C.MODEL.REFSEG.MEMORY.MASK_SOURCE = "annotation"
    # Autocast of the SAM 2 forwards that mask references: "" (as ACCEL.AMP), "bf16" (FSOD-VFM)
    # or "fp16".
    _C.MODEL.REFSEG.MEMORY.SAM2_AMP = ""
    # Reference crops encoded together by DINOv2 (bounds memory whatever the number of
    # annotations of an image; 0: all crops of an image at once). Features do not depend on it.
    # Identical copies of an annotation in an image are encoded once.
    _C.MODEL.REFSEG.MEMORY.CROPS_PER_BATCH = 16
    # Reference images per loader batch while filling the memory.
    _C.MODEL.REFSEG.MEMORY.IMAGES_PER_BATCH = 1
    # Save the filled memory to OUTPUT_DIR/<SAVE_NAME>.pth (main process only); "" saves nothing.
    _C.MODEL.REFSEG.MEMORY.SAVE_NAME = "refseg_memory"

    # Full-size masks of the kept proposals (soft merging needs their areas and intersections).
    _C.MODEL.REFSEG.FULL_MASKS = CN()
    # Pixel budget (masks x H x W) of the kept masks at full size. On CUDA they are held at once
    # when they fit (fast); otherwise, and on CPU, they are upsampled in chunks of at most this
    # many pixels (at least one mask) and reduced to run-length encodings. Identical results;
    # lower it if the mask upsampling runs out of memory.
    _C.MODEL.REFSEG.FULL_MASKS.MAX_PIXELS = 1 << 28

    # Accelerator paths. Off by default: the faithful path is fp32 without compilation.
    _C.MODEL.REFSEG.ACCEL = CN()
    # Autocast the SAM 2 and DINOv2 forwards: "" (fp32), "bf16" or "fp16" (CUDA).
    _C.MODEL.REFSEG.ACCEL.AMP = ""
    # torch.compile backend of DINOv2's forward_features, the SAM 2 image encoder and the prompt
    # decoder, at fixed shapes: "" (no compilation), "inductor" (code generation; fastest after
    # the first images), "eager" or "aot_eager" (tracing only, to debug compilation).
    _C.MODEL.REFSEG.ACCEL.COMPILE = ""
    # Allow TF32 in the CUDA matmuls and convolutions of the SAM 2 and DINOv2 forwards (no
    # effect on CPU; PyTorch's process-wide setting is left as it is).
    _C.MODEL.REFSEG.ACCEL.TF32 = False
    # Target images per test-loader batch; DINOv2 encodes the images of a batch together.
    _C.MODEL.REFSEG.ACCEL.IMAGES_PER_BATCH = 1
    # On a CPU, keep memory freed by large tensors in the process for reuse while proposals are
    # computed (glibc's mmap and trim thresholds at 256 MiB for the whole process during them,
    # glibc's own ceilings after) instead of faulting fresh pages in for every tensor: the same
    # numbers, faster (see refseg_d2.utils.cpu_allocator). False leaves the allocator alone.
    _C.MODEL.REFSEG.ACCEL.KEEP_FREED_MEMORY = True

    # Evaluation.
    _C.MODEL.REFSEG.EVAL = CN()
    # COCOeval implementation of the COCO-style evaluators: "faster_coco_eval" (the
    # faster-coco-eval package, pip install faster-coco-eval), "pycocotools" (the official one,
    # as the authors) or "detectron2" (Detectron2's compiled one, when built). Same numbers.
    _C.MODEL.REFSEG.EVAL.COCO_IMPL = "faster_coco_eval"

    # Input reading. Deviations from the reference are off by default.
    _C.MODEL.REFSEG.INPUT = CN()
    # Apply the EXIF orientation tag when reading images (the reference ignores it).
    _C.MODEL.REFSEG.INPUT.APPLY_EXIF = False

    # Registered dataset(s) whose annotations are the references (one shot per annotation).
    # Several names are concatenated; they must share one category list.
    _C.DATASETS.REFERENCE = ()
    _to_refseg_nodes(_C)


def _to_refseg_nodes(node):
    """Make ``node`` and its sub-nodes :class:`RefSegCfgNode` (Detectron2 merges need one type)."""
    object.__setattr__(node, "__class__", RefSegCfgNode)
    for value in node.values():
        if isinstance(value, CN):
            _to_refseg_nodes(value)


def _is_old(key, value, cfg):
    """Whether the override ``key`` ``value`` sets a removed key."""
    return is_old_key(key, cfg._decode_cfg_value(value) if isinstance(value, str) else value)


def _pop_old_keys(node, prefix=""):
    """Remove the removed keys from the loaded config ``node``; returns {full key: value}."""
    found = {}
    for key in list(node.keys()):
        full = prefix + key
        if isinstance(node[key], dict) and not is_old_key(full, node[key]):
            found.update(_pop_old_keys(node[key], full + "."))
        elif is_old_key(full, node[key]):
            found[full] = node.pop(key)
    return found


def _set(node, full_key, value):
    """``node[A][B][C] = value`` for full_key "A.B.C", creating the nodes on the way."""
    *parents, leaf = full_key.split(".")
    for part in parents:
        if part not in node:
            node[part] = type(node)()
        node = node[part]
    node[leaf] = value


# Checks of the values of MODEL.REFSEG.*: key -> (test, what the value must be).
_IN_UNIT_INTERVAL = (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_POSITIVE_INT = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
_NON_NEGATIVE_INT = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
_CHECKS = {
    "PRED_IOU_THRESH": _IN_UNIT_INTERVAL,
    "NMS_THRESH": _IN_UNIT_INTERVAL,
    "POINTS_PER_SIDE": _POSITIVE_INT,
    "POINTS_PER_BATCH": _POSITIVE_INT,
    "MAX_DETECTIONS": _POSITIVE_INT,
    "NMS_KEEP_FACTOR": _POSITIVE_INT,
    "MERGE_EXPONENT": _NON_NEGATIVE,
    "MEMORY.CONTEXT_RATIO": _NON_NEGATIVE,
    "MEMORY.IMAGES_PER_BATCH": _POSITIVE_INT,
    "MEMORY.CROPS_PER_BATCH": _NON_NEGATIVE_INT,
    "FULL_MASKS.MAX_PIXELS": _POSITIVE_INT,
    "ACCEL.IMAGES_PER_BATCH": _POSITIVE_INT,
    "PROPOSALS.MAX_BOXES": _POSITIVE_INT,
    "PROPOSALS.BOXES_PER_BATCH": _POSITIVE_INT,
    "DEDUP.ALPHA": _IN_UNIT_INTERVAL,
    "DEDUP.LAMBDA": _NON_NEGATIVE,
    "DEDUP.STEPS": _NON_NEGATIVE_INT,
    "DEDUP.TOL": _NON_NEGATIVE,
    "ENCODER.INPUT_SIZE": (
        lambda v: isinstance(v, int) and v >= 14 and v % 14 == 0,
        "a multiple of the DINOv2 patch size 14",
    ),
    "SAM2.INPUT_SIZE": (
        lambda v: isinstance(v, int) and v >= 64 and v % 32 == 0,
        "a multiple of 32 (SAM 2's image encoder strides), at least 64",
    ),
}


def _choice_check(values):
    return (lambda v: v in values, "one of " + ", ".join(repr(v) for v in values))


def check_refseg_config(cfg):
    """
    Raise ValueError naming the key, its value and what it must be, for the first
    ``MODEL.REFSEG`` value out of range (thresholds in [0, 1], positive counts, sizes the
    models accept, and the names declared with :func:`declare_choices`). Called when the
    model is built.
    """
    checks = dict(_CHECKS)
    checks.update((key, _choice_check(values)) for key, values in _CHOICES.items())
    for key, (test, allowed) in checks.items():
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
