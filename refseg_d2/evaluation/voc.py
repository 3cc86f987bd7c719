"""The standard metric of fine-tuned few-shot detectors on PASCAL VOC: VOC07 11-point AP50."""
import os
import tempfile
from collections import OrderedDict, defaultdict

from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, Instances
from detectron2.evaluation.pascal_voc_evaluation import voc_eval
from detectron2.utils import comm


def voc_file_id(file_name):
    """The VOC image id of an image file: ``.../JPEGImages/000005.jpg`` -> ``000005``."""
    return os.path.splitext(os.path.basename(file_name))[0]


def _xml_frame(instances):
    """A copy of ``instances`` whose inclusive boxes end one pixel further (x1 + 1, y1 + 1)."""
    out = Instances(instances.image_size)
    boxes = instances.pred_boxes.tensor.clone()
    boxes[:, 2:] += 1
    out.pred_boxes = Boxes(boxes)
    out.scores = instances.scores
    out.pred_classes = instances.pred_classes
    return out


class VOCFewShotEvaluator(PascalVOCDetectionEvaluator):
    """
    Detectron2's :class:`PascalVOCDetectionEvaluator` (its Python port of the VOC devkit:
    11-point interpolated AP for VOC2007, difficult objects ignored, ground truth read from the
    XML files of ``metadata.dirname``) for VOC test sets registered in COCO format.

    The devkit's image id is taken from ``input["file_name"]``, so image ids of the COCO
    conversion can be anything. Results are under ``"voc07_bbox"`` (``"voc12_bbox"`` for
    2012), beside the COCO evaluator's ``"bbox"``: Detectron2's AP (mean over IoU 0.50:0.95),
    AP50 and AP75, and ``AP50-<class>`` per class, all in percent. Every class of
    ``thing_classes`` needs ground truth in the image set.
    """

    def __init__(self, dataset_name):
        super().__init__(dataset_name)
        self.result_key = "voc07_bbox" if self._is_2007 else "voc12_bbox"

    def process(self, inputs, outputs):
        """
        Predicted boxes are the inclusive, 0-based extents of the masks (x1 is the last mask
        column); the devkit compares them with the XML's 1-based inclusive coordinates.
        Detectron2's evaluator adds 1 to xmin / ymin only (the inverse of its loader's
        ``xmin - 1``), so x1 / y1 are shifted by 1 here: a mask equal to an annotated object
        then has exactly the object's XML box.
        """
        inputs = [dict(x, image_id=voc_file_id(x["file_name"])) for x in inputs]
        outputs = [{"instances": _xml_frame(out["instances"])} for out in outputs]
        super().process(inputs, outputs)

    def _gathered_predictions(self):
        """
        The prediction lines of every rank, per class in rank order, on the main rank; an empty
        dict on the others. Must be called on every rank.
        """
        merged = defaultdict(list)
        for part in comm.gather(self._predictions, dst=0):
            for cls_id, lines in part.items():
                merged[cls_id].extend(lines)
        return merged

    def _ap50_per_class(self, predictions):
        """The devkit AP at IoU 0.5 of each class (percent), in ``thing_classes`` order."""
        aps = []
        with tempfile.TemporaryDirectory(prefix="refseg_voc_ap50_") as tmp:
            template = os.path.join(tmp, "{}.txt")
            for cls_id, cls_name in enumerate(self._class_names):
                with open(template.format(cls_name), "w") as f:
                    f.write("\n".join(predictions.get(cls_id, [])))
                _, _, ap = voc_eval(
                    template, self._anno_file_template, self._image_set_path, cls_name,
                    ovthresh=0.5, use_07_metric=self._is_2007,
                )
                aps.append(float(ap) * 100)
        return aps

    def evaluate(self):
        """
        Detectron2's evaluation, its ``"bbox"`` results under :attr:`result_key`, with
        ``AP50-<class>`` added (one more devkit call per class). The predictions cross ranks
        once: Detectron2's evaluation is handed them gathered on the main rank and empty on the
        others, so its own gather adds nothing. Must be called on every rank.

        Returns:
            OrderedDict or None: ``{result_key: {AP, AP50, AP75, AP50-<class>...}}`` on the
            main rank, None on the others.
        """
        own = self._predictions
        gathered = self._gathered_predictions()
        self._predictions = gathered
        try:
            results = super().evaluate()
        finally:
            self._predictions = own
        if results is None:
            return None
        res = OrderedDict((key, float(value)) for key, value in results["bbox"].items())
        for name, ap in zip(self._class_names, self._ap50_per_class(gathered)):
            res["AP50-" + name] = ap
        return OrderedDict([(self.result_key, res)])
