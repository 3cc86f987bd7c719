"""What the code needs to know about Detectron2's multi-process runs."""


def unwrap_model(model):
    """The model inside a DistributedDataParallel wrapper, or the model itself."""
    return model.module if hasattr(model, "module") else model
