"""Fixtures of the bundle tests: small wheels made here, never fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import PYTAG, cuda_so, make_wheel, payload


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    wd = tmp_path / "wheels"
    wd.mkdir()
    common = {
        "tinypkg/big.bin": payload("big", 300_000),  # unchanged between versions
        "tinypkg/_drop_me.so": b"dropped" * 100,
        "tinypkg/ext.cpython-39-x86_64-linux-gnu.so": b"old python",
        f"tinypkg/ext.cpython-{PYTAG}-x86_64-linux-gnu.so": b"this python",
        "tinypkg/_cuda.so": cuda_so(),
    }
    make_wheel(wd, "tinypkg", "1.0", {**common, "tinypkg/__init__.py": b"VERSION = '1.0'\n",
                                     "tinypkg/old.py": b"gone in 2.0\n",
                                     "tinypkg/tool": b"#!/bin/sh\necho hi\n"},
               requires=["tinydep>=1.0,<2", "presentpkg>=1", "notbundled; python_version >= '3'",
                         "winonly; sys_platform == 'win32'"], executable=["tinypkg/tool"])
    make_wheel(wd, "tinypkg", "2.0", {**common, "tinypkg/__init__.py": b"VERSION = '2.0'\n",
                                     "tinypkg/new.py": b"new in 2.0\n",
                                     "tinypkg/tool": b"#!/bin/sh\necho hi\n"},
               requires=["tinydep>=1.0,<2", "presentpkg>=1"], executable=["tinypkg/tool"])
    make_wheel(wd, "tinydep", "1.5", {"tinydep.py": b"X = 1\n"}, requires=["subdep", "presentpkg>=2"])
    make_wheel(wd, "tinydep", "2.0", {"tinydep.py": b"X = 2\n"})
    make_wheel(wd, "subdep", "0.1", {"subdep/__init__.py": b""})
    return wd


