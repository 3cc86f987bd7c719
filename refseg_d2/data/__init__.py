from .mappers import RefSegReferenceMapper, RefSegTargetMapper
