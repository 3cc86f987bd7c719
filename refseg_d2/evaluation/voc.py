"""The standard metric of fine-tuned few-shot detectors on PASCAL VOC: VOC07 11-point AP50."""
import logging
import os
import tempfile
from collections import OrderedDict, defaultdict

import numpy as np
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.evaluation.pascal_voc_evaluation import voc_eval
from detectron2.utils import comm

logger = logging.getLogger(__name__)


def voc_file_id(file_name):
    """The VOC image id of an image file: ``.../JPEGImages/000005.jpg`` -> ``000005``."""
    return os.path.splitext(os.path.basename(file_name))[0]


class VOCFewShotEvaluator(PascalVOCDetectionEvaluator):
    """
    Detectron2's :class:`PascalVOCDetectionEvaluator` (its Python port of the VOC devkit:
    11-point interpolated AP for VOC2007, difficult objects ignored, ground truth read from the
    XML files of ``metadata.dirname``) for VOC test sets registered in COCO format.

    The devkit's image id is taken from ``input["file_name"]``, so image ids of the COCO
    conversion can be anything. Results are under ``"voc07_bbox"`` (``"voc12_bbox"`` for
    2012), beside the COCO evaluator's ``"bbox"``: AP (mean over IoU 0.50:0.95), AP50, AP75,
    and ``AP50-<class>`` per class, all in percent. Every class of ``thing_classes`` needs
    ground truth in the image set.
    """

    def __init__(self, dataset_name):
        super().__init__(dataset_name)
        self.result_key = "voc07_bbox" if self._is_2007 else "voc12_bbox"

    def process(self, inputs, outputs):
        inputs = [dict(x, image_id=voc_file_id(x["file_name"])) for x in inputs]
        super().process(inputs, outputs)

    def evaluate(self):
        parts = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        predictions = defaultdict(list)
        for part in parts:
            for cls_id, lines in part.items():
                predictions[cls_id].extend(lines)
        logger.info(
            "Evaluating %s with the VOC%s devkit metric (%s)", self._dataset_name,
            "07" if self._is_2007 else "12", "11-point" if self._is_2007 else "area",
        )
        aps = defaultdict(list)  # IoU threshold (percent) -> AP per class
        with tempfile.TemporaryDirectory(prefix="refseg_voc_eval_") as tmp:
            template = os.path.join(tmp, "{}.txt")
            for cls_id, cls_name in enumerate(self._class_names):
                with open(template.format(cls_name), "w") as f:
                    f.write("\n".join(predictions.get(cls_id, [])))
                for thresh in range(50, 100, 5):
                    _, _, ap = voc_eval(
                        template, self._anno_file_template, self._image_set_path, cls_name,
                        ovthresh=thresh / 100.0, use_07_metric=self._is_2007,
                    )
                    aps[thresh].append(float(ap) * 100)
        res = OrderedDict()
        res["AP"] = float(np.mean([np.mean(v) for v in aps.values()]))
        res["AP50"] = float(np.mean(aps[50]))
        res["AP75"] = float(np.mean(aps[75]))
        for name, ap in zip(self._class_names, aps[50]):
            res["AP50-" + name] = ap
        return OrderedDict([(self.result_key, res)])
