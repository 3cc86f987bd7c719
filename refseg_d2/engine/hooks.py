"""The memory-bank step as a Detectron2 hook, for users' own training/evaluation loops."""
from detectron2.engine import HookBase

from .memory_filling import ensure_memory


class MemoryBankHook(HookBase):
    """
    Fills the model's memory bank from ``cfg.DATASETS.REFERENCE`` before training starts (or
    whenever :meth:`fill` is called), with the same code as ``RefSegTrainer.test``.

    Example::

        trainer.register_hooks([MemoryBankHook(cfg)])   # before the EvalHook
    """

    def __init__(self, cfg, model=None, force=False, save=True):
        """
        Args:
            cfg: the config (DATASETS.REFERENCE, MODEL.REFSEG.MEMORY.*, OUTPUT_DIR).
            model: the RefSeg model; default: the trainer's model.
            force (bool): refill even when the memory is already filled.
            save (bool): save the filled memory to OUTPUT_DIR.
        """
        self.cfg = cfg
        self._model = model
        self.force = force
        self.save = save

    def before_train(self):
        self.fill()

    def fill(self):
        """Fill the memory now. Returns whether it was (re)filled."""
        model = self._model if self._model is not None else self.trainer.model
        return ensure_memory(self.cfg, model, force=self.force, save=self.save)
