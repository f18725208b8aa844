"""
The PID file on disk, in this process: written whole in one rename, never
read or written through a symlink, removed only by the process it names, and
the early check of its directory.
"""

from __future__ import annotations

import os
import stat
import tempfile

from twisted.trial.unittest import TestCase

from txflip.core.pidfile import (
    PIDFileError,
    checkWritableDirectory,
    processIsAlive,
    readPID,
    removePIDIfOurs,
    writePID,
)


class PIDFileTestCase(TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="txflip-pid-")
        self.path = os.path.join(self.directory, "app.pid")


class WriteTests(PIDFileTestCase):
    def test_writtenInOneRename(self) -> None:
        """The file is replaced, not rewritten: a reader holds the old one or the new one."""
        writePID(self.path, 1111)
        with open(self.path) as reader:
            writePID(self.path, 2222)
            self.assertEqual(reader.read(), "1111\n")
        with open(self.path) as f:
            self.assertEqual(f.read(), "2222\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o644)
        self.assertEqual(os.listdir(self.directory), ["app.pid"])

    def test_defaultIsThisProcess(self) -> None:
        writePID(self.path)
        self.assertEqual(readPID(self.path), os.getpid())

    def test_symlinkReplacedNotFollowed(self) -> None:
        """A symlink at the path is replaced by the file; its target is left untouched."""
        target = os.path.join(self.directory, "elsewhere")
        with open(target, "w") as f:
            f.write("precious\n")
        os.symlink(target, self.path)
        writePID(self.path, 3333)
        self.assertFalse(os.path.islink(self.path))
        self.assertEqual(readPID(self.path), 3333)
        with open(target) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_failedWriteLeavesNothing(self) -> None:
        os.mkdir(self.path)  # a directory cannot be renamed over
        self.assertRaises(OSError, writePID, self.path, 4444)
        self.assertEqual(os.listdir(self.directory), ["app.pid"])


class ReadTests(PIDFileTestCase):
    def test_missingOrNotAPID(self) -> None:
        self.assertIsNone(readPID(self.path))
        for text in ("", "abc\n", "12 34\n", "-5\n"):
            with open(self.path, "w") as f:
                f.write(text)
            self.assertIsNone(readPID(self.path), repr(text))
        with open(self.path, "w") as f:
            f.write("  42 \n")
        self.assertEqual(readPID(self.path), 42)

    def test_symlinkIsNotRead(self) -> None:
        target = os.path.join(self.directory, "real.pid")
        writePID(target, 5555)
        os.symlink(target, self.path)
        self.assertIsNone(readPID(self.path))
        self.assertEqual(readPID(target), 5555)


class RemoveTests(PIDFileTestCase):
    def test_removedOnlyByTheProcessItNames(self) -> None:
        writePID(self.path, 6666)
        self.assertFalse(removePIDIfOurs(self.path, 7777))
        self.assertTrue(os.path.exists(self.path))
        self.assertTrue(removePIDIfOurs(self.path, 6666))
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(removePIDIfOurs(self.path, 6666))

    def test_defaultIsThisProcess(self) -> None:
        writePID(self.path, os.getpid() + 1)
        self.assertFalse(removePIDIfOurs(self.path))
        writePID(self.path)
        self.assertTrue(removePIDIfOurs(self.path))


class DirectoryCheckTests(PIDFileTestCase):
    def test_writableDirectoryPassesAndIsLeftClean(self) -> None:
        checkWritableDirectory(self.path)
        self.assertEqual(os.listdir(self.directory), [])

    def test_missingDirectory(self) -> None:
        missing = os.path.join(self.directory, "none", "app.pid")
        error = self.assertRaises(PIDFileError, checkWritableDirectory, missing)
        self.assertEqual(
            str(error),
            f"PID file directory {os.path.dirname(missing)} does not exist: "
            "create it or choose another --pid-file",
        )

    def test_unwritableDirectory(self) -> None:
        """/proc/self refuses new files even to root."""
        error = self.assertRaises(PIDFileError, checkWritableDirectory, "/proc/self/app.pid")
        self.assertIn("cannot write the PID file in /proc/self (", str(error))
        self.assertIn("fix its permissions or choose another --pid-file", str(error))


class AliveTests(TestCase):
    def test_thisProcessIsAlive(self) -> None:
        self.assertTrue(processIsAlive(os.getpid()))

    def test_noSuchProcess(self) -> None:
        with open("/proc/sys/kernel/pid_max") as f:
            beyond = int(f.read()) + 1
        self.assertFalse(processIsAlive(beyond))
