"""Folders written atomically with the user's normal permissions.

Atomic writes build a folder under a temporary name and rename it into place. Python's
`tempfile.mkdtemp` creates that folder with mode 0700 whatever the umask, and some writers
(safetensors) create their file 0600, so a checkpoint or a shard cache renamed from it would
be private to its owner while every other file the user writes is not. `user_modes` gives
the folder the mode `mkdir` would (0777 minus the umask) and each file inside the mode `open`
would (0666 minus the umask), before the rename makes them visible.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux's
    /proc/self/status); elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0o666 without the umask's bits."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode `os.mkdir` gives a new folder: 0o777 without the umask's bits."""
    return 0o777 & ~current_umask()


def user_modes(folder: str | Path) -> None:
    """Give every file under `folder` the mode `open` would, every folder the mode `mkdir`
    would (call before renaming a finished temporary folder into place)."""
    files, folders = file_mode(), folder_mode()
    folder = Path(folder)
    os.chmod(folder, folders)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, folders if path.is_dir() else files)
