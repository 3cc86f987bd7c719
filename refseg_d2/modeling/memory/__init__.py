"""
The memory stage: reference annotations encoded into instance prototypes, held in a
:class:`MemoryBank`, saved and loaded with their provenance, and reported on.

- ``bank.py``: :class:`MemoryBank` (from_records / set / extend / prototypes / metadata).
- ``records.py``: :class:`ReferenceRecord`, one encoded reference; :func:`record_statistics`.
- ``encoding.py``: :class:`ReferenceEncoder`, reference crops -> records.
- ``io.py``: :func:`save_memory`, :func:`load_memory` and :class:`RefSegCheckpointer` (through
  them).
- ``report.py``: the reference-quality report of a memory.

The loop that fills a memory from registered datasets is ``refseg_d2.engine.memory_filling``.
"""
from .bank import MemoryBank
from .encoding import BOX_MASK_SOURCES, ReferenceEncoder
from .io import MEMORY_PREFIX, PROVENANCE_KEY, RefSegCheckpointer, load_memory, save_memory
from .records import ReferenceRecord, record_statistics

__all__ = [
    "BOX_MASK_SOURCES", "MEMORY_PREFIX", "PROVENANCE_KEY", "MemoryBank", "RefSegCheckpointer",
    "ReferenceEncoder", "ReferenceRecord", "load_memory", "record_statistics", "save_memory",
]
