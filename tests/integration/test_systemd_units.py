"""
The systemd unit files shipped in docs/systemd pass C{systemd-analyze verify}.

Verification runs against a scratch root (C{--root}) holding a copy of the
system's own units and an executable stub at each path the units run, so it
checks every directive and dependency without installing anything.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import TestCase

UNITS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "systemd"
)
ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = next(
    (d for d in ("/usr/lib/systemd/system", "/lib/systemd/system") if os.path.isdir(d)), None
)
NEEDS_VERSION = {"myapp-notify-reload.service": (253, "Type=notify-reload")}


def systemdVersion() -> int:
    out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


def executables(path: str) -> list[str]:
    """Every absolute program an Exec*= line of the unit runs."""
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    found = []
    for match in re.finditer(r"^Exec\w+=[-@:+!]*(/\S+)", text, re.M):
        found.append(match.group(1))
    return found


class VerifyUnitsTests(TestCase):
    def setUp(self) -> None:
        if ANALYZE is None:
            self.skipTest("systemd-analyze is not installed (Debian package systemd)")
        if SYSTEM_UNITS is None:
            self.skipTest("no system unit directory to verify dependencies against")
        self.root = tempfile.mkdtemp(prefix="txflip-units-")
        self.addCleanup(shutil.rmtree, self.root, True)
        os.makedirs(os.path.join(self.root, "usr", "lib", "systemd"))
        shutil.copytree(
            SYSTEM_UNITS, os.path.join(self.root, "usr", "lib", "systemd", "system"), symlinks=True
        )
        self.unitDir = os.path.join(self.root, "etc", "systemd", "system")
        os.makedirs(self.unitDir)
        probe = os.path.join(self.unitDir, "txflip-probe.service")
        with open(probe, "w") as f:
            f.write("[Service]\nType=oneshot\nExecStart=/bin/true\n")
        os.makedirs(os.path.join(self.root, "bin"), exist_ok=True)
        self.stub("/bin/true")
        result = self.verify("txflip-probe.service")
        if result.returncode != 0 or result.stderr.strip():
            self.skipTest(f"systemd-analyze verify cannot run here: {result.stderr.strip()}")

    def stub(self, program: str) -> None:
        path = os.path.join(self.root, program.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, 0o755)

    def install(self, name: str, text: str | None = None) -> None:
        source = os.path.join(UNITS, name)
        with open(source) as f:
            content = f.read() if text is None else text
        with open(os.path.join(self.unitDir, name), "w") as f:
            f.write(content)
        for program in executables(source):
            self.stub(program)

    def verify(self, *names: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [ANALYZE, "verify", "--man=no", f"--root={self.root}", *names],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def assertVerifies(self, *names: str) -> None:
        for name in names:
            if name in NEEDS_VERSION and systemdVersion() < NEEDS_VERSION[name][0]:
                version, feature = NEEDS_VERSION[name]
                self.skipTest(f"{feature} needs systemd {version}; this is {systemdVersion()}")
        for name in glob.glob(os.path.join(UNITS, "*.s*")):
            self.install(os.path.basename(name))
        result = self.verify(*names)
        self.assertEqual((result.returncode, result.stderr), (0, ""), names)

    def test_notify(self) -> None:
        self.assertVerifies("myapp.service")

    def test_forking(self) -> None:
        self.assertVerifies("myapp-forking.service")

    def test_socketActivation(self) -> None:
        self.assertVerifies("myapp-activated.socket", "myapp-activated.service")

    def test_notifyReload(self) -> None:
        self.assertVerifies("myapp-notify-reload.service")

    def test_fdStore(self) -> None:
        self.assertVerifies("myapp-fdstore.service")

    def test_everyUnitIsCovered(self) -> None:
        shipped = {os.path.basename(p) for p in glob.glob(os.path.join(UNITS, "*.s*"))}
        self.assertEqual(
            shipped,
            {
                "myapp.service",
                "myapp-forking.service",
                "myapp-activated.socket",
                "myapp-activated.service",
                "myapp-notify-reload.service",
                "myapp-fdstore.service",
            },
        )

    def test_aBrokenUnitFails(self) -> None:
        """The check can fail: a misspelt type is reported."""
        with open(os.path.join(UNITS, "myapp.service")) as f:
            broken = f.read().replace("Type=notify", "Type=notfy")
        self.install("myapp.service", broken)
        result = self.verify("myapp.service")
        self.assertIn("Failed to parse service type", result.stderr)
