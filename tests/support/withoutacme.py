"""
Run a process as if txflip had been installed without its acme extra: a
C{sitecustomize} module, first on C{PYTHONPATH}, makes C{acme}, C{josepy} and
C{treq} impossible to import.
"""

from __future__ import annotations

import os
import tempfile

from txflip.acme.extra import ACME_PACKAGES

SITECUSTOMIZE = """
import sys

BLOCKED = %(blocked)r


class WithoutTheAcmeExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, WithoutTheAcmeExtra())
"""


def withoutAcmeEnv() -> dict[str, str]:
    """Environment variables (to add to a process's) that hide the acme extra."""
    directory = tempfile.mkdtemp(prefix="txflip-without-acme-")
    with open(os.path.join(directory, "sitecustomize.py"), "w") as f:
        f.write(SITECUSTOMIZE % {"blocked": ACME_PACKAGES})
    paths = [directory, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths)}
