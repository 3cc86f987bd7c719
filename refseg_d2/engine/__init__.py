from .defaults import build_cfg, refseg_argument_parser, register_datasets, setup
from .hooks import MemoryBankHook
from .memory_filling import build_memory, check_memory_matches, ensure_memory, fill_memory
from .memory_sets import build_memories
from .sweep import SweepRun, run_sweep
from .trainer import RefSegTrainer
