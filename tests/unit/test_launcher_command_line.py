"""
C{python -m txflip run [flip options] (-m MODULE | SCRIPT) ARGS...}: flip's
options end at the module or the script, and every word after it is the
program's, unchanged, as with C{python -m}.
"""

from __future__ import annotations

import contextlib
import io

from twisted.trial.unittest import TestCase

from txflip.launcher import splitCommandLine


class SplitCommandLineTests(TestCase):
    def test_moduleArgumentsThatLookLikeFlipsOrArgparses(self) -> None:
        """The issue's case: the program's own -c, --pid-file and -- are its own."""
        self.assertEqual(
            splitCommandLine(
                [
                    "--pid-file",
                    "P",
                    "-m",
                    "synapse.app.homeserver",
                    "-c",
                    "h.yaml",
                    "--pid-file",
                    "X",
                    "--",
                    "-h",
                ]
            ),
            (
                ["--pid-file", "P"],
                "synapse.app.homeserver",
                ["-c", "h.yaml", "--pid-file", "X", "--", "-h"],
            ),
        )

    def test_moduleJoinedToDashM(self) -> None:
        self.assertEqual(splitCommandLine(["-mmyserver", "-v"]), ([], "myserver", ["-v"]))

    def test_script(self) -> None:
        self.assertEqual(
            splitCommandLine(
                ["--no-control", "--ready-timeout=5", "server.py", "--help", "-m", "x"]
            ),
            (["--no-control", "--ready-timeout=5"], None, ["server.py", "--help", "-m", "x"]),
        )

    def test_optionValuesAreNotThePrograms(self) -> None:
        """A value of flip's that looks like a word or like -m stays flip's."""
        self.assertEqual(
            splitCommandLine(["--restart-signal", "USR2", "--control", "-m", "server.py", "a"]),
            (["--restart-signal", "USR2", "--control", "-m"], None, ["server.py", "a"]),
        )

    def test_doubleDashBeforeAScript(self) -> None:
        self.assertEqual(
            splitCommandLine(["--pid-file", "P", "--", "-odd-name.py", "x"]),
            (["--pid-file", "P"], None, ["-odd-name.py", "x"]),
        )

    def test_noProgram(self) -> None:
        self.assertEqual(splitCommandLine(["--no-control"]), (["--no-control"], None, []))

    def test_dashMWithoutModuleIsOneLine(self) -> None:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as caught:
            splitCommandLine(["--no-control", "-m"])
        self.assertEqual(caught.exception.code, 2)
        [line] = stderr.getvalue().splitlines()
        self.assertTrue(line.startswith("txflip run: error: -m needs a MODULE"), line)
