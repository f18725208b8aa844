"""
Small filesystems for the tests, made real with mount(2): a tmpfs a test can
fill (a disk that is full) or remount read-only (a disk that went read-only).

Mounting needs root (CAP_SYS_ADMIN); without it the test is skipped and says
why. Every mount is lazily unmounted when the test ends, pass or fail.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def tinyTmpfs(testCase, kib: int = 256) -> str:
    """A fresh tmpfs of C{kib} KiB at a new directory, unmounted at cleanup."""
    if shutil.which("mount") is None:
        raise SkipTest("no mount command here")
    path = tempfile.mkdtemp(prefix="txflip-tmpfs-")
    testCase.addCleanup(shutil.rmtree, path, True)
    result = _mount("-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", path)
    if result.returncode != 0:
        raise SkipTest(
            f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}"
        )
    testCase.addCleanup(subprocess.run, ["umount", "-l", path], capture_output=True, timeout=30)
    return path


def fill(directory: str) -> int:
    """Write a file into C{directory} until its filesystem is full; return the bytes written."""
    written = 0
    chunk = b"\0" * 4096
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                return written


def remountReadOnly(path: str) -> None:
    """Make the tmpfs at C{path} read-only, as a failing disk would be."""
    result = _mount("-o", "remount,ro", path)
    if result.returncode != 0:
        raise AssertionError(f"cannot remount {path} read-only: {result.stderr.strip()}")
