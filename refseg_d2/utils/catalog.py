"""Detectron2's dataset and metadata catalogs: what registering a dataset again needs."""
from detectron2.data import DatasetCatalog, MetadataCatalog


def unregister(name):
    """Remove ``name`` from DatasetCatalog and MetadataCatalog if it is registered; returns it."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    return name
