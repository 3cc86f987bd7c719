"""
RefSeg: the training-free, reference-based instance segmentation meta-architecture. Two methods
are two configs of it: "No Time to Train!" (arXiv 2507.02798; the defaults) and FSOD-VFM
(``configs/fsod_vfm/``), each as its authors' code runs it.

Per target image: SAM 2 turns the prompts of a proposal source (a point grid, a boxes file or a
Detectron2 detector) into masks, and each mask's DINOv2 feature is pooled (the proposal stage,
``proposals/`` and ``pooling.py``); the features are matched to the class prototypes of a memory
bank, NMS and a de-duplication (soft merging or graph diffusion, ``dedup.py``) remove duplicates
and the top detections are returned at the original image size (the matching stage,
``matching.py``). References become a memory bank through the memory stage (``memory/``). The
registered parts (encoder, proposal source, pooling, reference-mask source, de-duplication) are
named by config keys; see docs/CONFIG.md.
"""
import logging

import torch
import torch.nn as nn
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.logger import log_every_n_seconds

from ..config import check_refseg_config
from ..utils.cpu_allocator import freed_memory_kept
from ..utils.timing import StageTimer
from .dedup import build_dedup
from .encoders import build_encoder
from .matching import ProposalMatcher
from .memory import MemoryBank
from .memory.encoding import AnnotationMasks, build_mask_source
from .pooling import MaskGridPooling, build_pooling
from .precision import amp_dtype
from .proposals import ProposalGenerator, SAM2Prompter, build_sam2_model
from .proposals.accel import compile_models
from .proposals.sources import GivenBoxesSource, PointGridSource, build_proposal_source

logger = logging.getLogger(__name__)

# Sub-modules holding frozen foundation-model weights: loaded from their official files
# (the WEIGHTS keys), never saved in, nor read from, refseg checkpoints.
FROZEN_MODULES = ("encoder", "prompter")


@META_ARCH_REGISTRY.register()
class RefSeg(nn.Module):
    """
    Inference-only meta-architecture. ``forward`` segments target images with ``self.memory``
    (a :class:`MemoryBank`, replaced with :meth:`set_memory`); :meth:`compute_proposals` and
    :meth:`match_batch` (:meth:`match` for one image) are its two halves, so that one image's
    proposals can be matched against several memories; :meth:`encode_references` turns
    reference inputs into records from which a memory is built
    (``refseg_d2.engine.memory_filling``).
    """

    @configurable
    def __init__(
        self,
        *,
        encoder,
        prompter,
        nms_thresh=0.5,
        nms_keep_factor=8,
        max_detections=100,
        merge_exponent=0.5,
        box_mask_source="sam2",
        crops_per_batch=16,
        full_mask_mode="auto",
        max_pixels=1 << 28,
        proposal_source=None,
        pooling=None,
        mask_source=None,
        dedup=None,
        dedup_masks="full",
        negative_scores="drop",
        given_boxes=None,
        keep_freed_memory=False,
    ):
        """
        Args:
            encoder (nn.Module): semantic encoder, see ``refseg_d2.modeling.encoders``.
            prompter (SAM2Prompter): SAM 2 prompting. The encoder and the prompter apply their
                own precision settings (ACCEL.AMP, ACCEL.TF32) around their forwards.
            nms_thresh (float): box IoU threshold of the class-aware NMS.
            nms_keep_factor (int): NMS keeps at most nms_keep_factor * max_detections masks.
            max_detections (int): detections per image.
            merge_exponent (float): exponent of the soft-merging decay.
            box_mask_source (str): "sam2" or "box", the mask of a box-only reference (used when
                ``mask_source`` is None).
            crops_per_batch (int): reference crops encoded together (0: all of an image).
            full_mask_mode (str): "auto", "dense" or "streamed": how the kept masks are held at
                full size (identical results; see ``refseg_d2.modeling.matching``). Not a config
                key: tests and benchmarks force a mode here.
            max_pixels (int): full-size mask pixels held at once (FULL_MASKS.MAX_PIXELS): "auto"
                holds all kept masks at once on CUDA up to this, otherwise streams chunks of it.
            proposal_source, pooling, mask_source, dedup: registered parts (``proposals.sources``,
                ``pooling``, ``memory.encoding``, ``dedup``); None: NTT's (point grid, mask-grid
                pooling, annotation masks, soft merging).
            dedup_masks (str), negative_scores (str): see ``refseg_d2.modeling.matching``.
            given_boxes (GivenBoxesSource): prompts the boxes an input carries ("proposals").
            keep_freed_memory (bool): on a CPU, keep freed memory in the process during
                :meth:`compute_proposals` (ACCEL.KEEP_FREED_MEMORY, see
                ``refseg_d2.utils.cpu_allocator``).
        """
        super().__init__()
        self.keep_freed_memory = keep_freed_memory
        self.encoder = encoder
        self.prompter = prompter
        self.memory = MemoryBank(encoder.feature_dim, encoder.signature())
        self.timer = StageTimer()
        self.proposal_source = proposal_source or PointGridSource()
        self.pooling = pooling or MaskGridPooling(encoder)
        self.proposal_generator = ProposalGenerator(
            self.proposal_source, self.pooling, prompter, self.timer, max_pixels,
            given_boxes or GivenBoxesSource())
        self.matcher = ProposalMatcher(
            self.timer, nms_thresh, nms_keep_factor, max_detections, merge_exponent,
            full_mask_mode, max_pixels, dedup, dedup_masks, negative_scores,
        )
        self.reference_encoder = self.pooling.reference_encoder(
            prompter, mask_source or AnnotationMasks(box_mask_source), crops_per_batch)
        self.register_state_dict_post_hook(_drop_frozen_weights)

    @classmethod
    def from_config(cls, cfg):
        check_refseg_config(cfg)
        r = cfg.MODEL.REFSEG
        sam = build_sam2_model(r.SAM2.CONFIG, r.SAM2.WEIGHTS, r.SAM2.INPUT_SIZE, r.RANDOM_INIT)
        encoder = build_encoder(cfg)
        prompter = SAM2Prompter(sam, r.POINTS_PER_SIDE, r.POINTS_PER_BATCH, r.PRED_IOU_THRESH,
                                r.SAM2.DECODER, amp_dtype(r.ACCEL.AMP), r.ACCEL.TF32,
                                r.SAM2.INTERFACE)
        if r.ACCEL.COMPILE:
            compile_models(encoder, prompter, r.ACCEL.COMPILE)
        return {
            "encoder": encoder,
            "prompter": prompter,
            "nms_thresh": r.NMS_THRESH,
            "nms_keep_factor": r.NMS_KEEP_FACTOR,
            "max_detections": r.MAX_DETECTIONS,
            "merge_exponent": r.MERGE_EXPONENT,
            "crops_per_batch": r.MEMORY.CROPS_PER_BATCH,
            "max_pixels": r.FULL_MASKS.MAX_PIXELS,
            "proposal_source": build_proposal_source(cfg),
            "pooling": build_pooling(cfg, encoder),
            "mask_source": build_mask_source(cfg),
            "dedup": build_dedup(cfg),
            "dedup_masks": r.DEDUP.MASKS,
            "negative_scores": r.NEGATIVE_SCORES,
            "given_boxes": GivenBoxesSource(cfg),
            "keep_freed_memory": r.ACCEL.KEEP_FREED_MEMORY,
        }

    @property
    def device(self):
        return self.prompter.pixel_mean.device

    def train(self, mode=True):
        """The foundation models stay in eval mode: nothing here is ever trained."""
        return super().train(False)

    def set_memory(self, memory):
        """
        Use ``memory`` (a :class:`MemoryBank` of this model's encoder) from now on. Returns
        the previous memory.
        """
        if not isinstance(memory, MemoryBank):
            raise TypeError("set_memory needs a MemoryBank, got {}".format(type(memory).__name__))
        if memory.feature_dim != self.encoder.feature_dim:
            raise ValueError(
                "The memory holds {}-d features; the encoder {} gives {}-d".format(
                    memory.feature_dim, self.encoder.name, self.encoder.feature_dim
                )
            )
        previous, self.memory = self.memory, memory.to(self.device)
        return previous

    def forward(self, batched_inputs):
        """
        Args:
            batched_inputs (list[dict]): from :class:`RefSegTargetMapper`, each with
                "image": (3, S, S) uint8 RGB squashed to the SAM 2 input (SAM2.INTERFACE
                "direct") or (3, H, W) at its own size ("image_predictor"); "height", "width":
                the original size (the output size); "encoder_image" for the token-grid
                pooling; "image_id" for a boxes file.
        Returns:
            list[dict]: {"instances": Instances} at (height, width) with pred_masks (n, H, W)
            bool, pred_boxes (inclusive mask extents, or the proposal boxes of a box source),
            scores and pred_classes (memory class index = rank of the category id),
            n <= max_detections.
        """
        self.memory.prototypes()  # an empty memory fails before any proposal is computed
        outputs = self.match_batch(batched_inputs, self.compute_proposals(batched_inputs))
        log_every_n_seconds(logging.INFO, "Per-stage time: " + self.timer.summary(), n=60, name=__name__)
        return outputs

    def check_targets(self, dicts, dataset_name):
        """
        Check, before any model work, that the proposal source can serve the images of a test
        dataset (a boxes file must have every image id); raises naming the image at fault.
        """
        self.proposal_source.check_targets(dicts, dataset_name)

    def output_size(self, inputs):
        """(height, width) of a target input (its original size)."""
        size = self.prompter.input_size
        return int(inputs.get("height", size)), int(inputs.get("width", size))

    def compute_proposals(self, batched_inputs):
        """
        The reference-independent part of the method; the images are counted by ``timer``
        (once, however many memories their proposals are matched against).

        Returns:
            list[Proposals], one per input.
        """
        keep = self.keep_freed_memory and self.device.type == "cpu"
        with freed_memory_kept(keep):
            proposals = self.proposal_generator(batched_inputs)
        self.timer.num_images += len(batched_inputs)
        return proposals

    def match_batch(self, batched_inputs, proposals, memory=None):
        """
        Match the proposals of a batch against a memory (default ``self.memory``).

        Args:
            batched_inputs (list[dict]): as :meth:`forward` takes them.
            proposals (list[Proposals]): from :meth:`compute_proposals`, one per input.
        Returns:
            list[dict]: as :meth:`forward` returns them.
        """
        memory = self.memory if memory is None else memory
        return [
            {"instances": self.match(p, memory, *self.output_size(inputs))}
            for inputs, p in zip(batched_inputs, proposals)
        ]

    def match(self, proposals, memory, height, width):
        """
        Match the proposals of one image against any memory.

        Args:
            proposals (Proposals): from :meth:`compute_proposals`.
            memory (MemoryBank): a filled memory of this model's encoder.
            height, width (int): the output size.
        Returns:
            Instances, as :meth:`forward` gives them.
        """
        return self.matcher(proposals, memory.prototypes().to(self.device), height, width)

    @torch.no_grad()
    def encode_references(self, batched_inputs):
        """
        Encode reference inputs (from :class:`RefSegReferenceMapper`).

        Returns:
            list[ReferenceRecord], one per annotation, in input then annotation order.
        """
        return self.reference_encoder(batched_inputs)


def _drop_frozen_weights(module, state_dict, prefix, local_metadata):
    for key in list(state_dict.keys()):
        if key.startswith(tuple(prefix + m + "." for m in FROZEN_MODULES)):
            del state_dict[key]
