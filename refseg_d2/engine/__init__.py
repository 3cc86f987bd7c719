from .hooks import MemoryBankHook
from .memory_filling import check_memory_matches, ensure_memory, fill_memory
from .trainer import RefSegTrainer
