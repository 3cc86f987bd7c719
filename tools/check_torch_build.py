#!/usr/bin/env python
"""
Print which torch build is installed and whether CUDA works (the last step of make install).

A CUDA build whose CUDA version needs a newer NVIDIA driver than the machine has reports
``torch.cuda.is_available() == False`` without an error; this names the fix.
"""
import shutil
import subprocess

import torch


def driver_version():
    """The NVIDIA driver version from nvidia-smi, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def main():
    cuda = torch.version.cuda
    available = torch.cuda.is_available()
    driver = driver_version()
    print("[install] torch {} ({}), CUDA available: {}{}".format(
        torch.__version__, "CUDA {} build".format(cuda) if cuda else "CPU-only build", available,
        ", NVIDIA driver {}".format(driver) if driver else ""))
    if available:
        print("[install] GPU: {}".format(torch.cuda.get_device_name(0)))
    elif driver and cuda:
        print("[install] An NVIDIA driver is present but CUDA is unavailable: this torch is built "
              "for CUDA {} and the driver may be too old for it (CUDA 13.0 needs driver >= 580). "
              "Reinstall with a matching build, e.g.\n"
              "  make clean-venv && make install TORCH_INDEX=https://download.pytorch.org/whl/cu126"
              .format(cuda))


if __name__ == "__main__":
    main()
