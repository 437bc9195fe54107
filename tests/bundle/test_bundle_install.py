"""The node's installer: replacing an install safely, and the command lines that reach it."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bundle import install as node
from tests.fixtures import ROOT, build

NO_PYTHONPATH = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _version_importable_from(site: Path) -> str:
    res = subprocess.run([sys.executable, "-c", "import tinypkg; print(tinypkg.VERSION)"],
                         env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def test_a_failure_between_the_two_renames_leaves_the_old_install(wheels, tmp_path, monkeypatch):
    build(wheels, "1.0", tmp_path / "b1")
    build(wheels, "2.0", tmp_path / "b2")
    site = tmp_path / "site"
    node.install([tmp_path / "b1"], site, log=lambda m: None)

    # The step that puts the new tree in place fails (whichever call does it), after the old tree
    # may already have been moved or deleted.
    def failing(real):
        def move(src, dst, *args, **kwargs):
            if Path(dst) == site and ".old-" not in Path(src).name:
                raise OSError(errno.EIO, "injected failure while moving the new tree in")
            return real(src, dst, *args, **kwargs)
        return move
    monkeypatch.setattr(os, "rename", failing(os.rename))
    monkeypatch.setattr(os, "replace", failing(os.replace))
    with pytest.raises(OSError, match="injected failure"):
        node.install([tmp_path / "b2"], site, force=True, log=lambda m: None)
    monkeypatch.undo()

    assert _version_importable_from(site) == "1.0"
    assert json.loads((site / node.STAMP).read_text())["name"] == "tinypkg-1.0"
    assert _leftovers(tmp_path, "site") == []
    # the next try goes through, and leaves nothing aside
    node.install([tmp_path / "b2"], site, force=True, log=lambda m: None)
    assert _version_importable_from(site) == "2.0"
    assert _leftovers(tmp_path, "site") == []


def test_a_target_that_is_a_file_or_a_link_is_refused(wheels, tmp_path):
    build(wheels, "1.0", tmp_path / "b1")
    (tmp_path / "file").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    for name in ("file", "link"):
        with pytest.raises(node.InputError, match=f"{tmp_path / name} is not a directory: not replacing it"):
            node.install([tmp_path / "b1"], tmp_path / name, force=True, log=lambda m: None)
    assert (tmp_path / "file").read_text() == "keep" and (tmp_path / "link").is_symlink()


def test_swap_in_replaces_a_file_or_a_link_too(tmp_path):
    for kind in ("file", "link"):
        dest, new = tmp_path / f"dest-{kind}", tmp_path / f"new-{kind}"
        if kind == "file":
            dest.write_text("old")
        else:
            dest.symlink_to(tmp_path)
        new.mkdir()
        (new / "x").write_text("new")
        node.swap_in(new, dest)
        assert (dest / "x").read_text() == "new" and not dest.is_symlink()
        assert _leftovers(tmp_path, dest.name) == []
    assert tmp_path.is_dir()  # the link's target was not removed


def test_the_direct_script_imports_only_the_standard_library(wheels, tmp_path):
    """harness/bundle/install.py itself, not only its copy in a bundle, runs on a bare interpreter."""
    build(wheels, "1.0", tmp_path / "b1")
    script = ROOT / "harness/bundle/install.py"
    code = (
        "import json, runpy, sys\n"
        f"sys.argv = [{str(script)!r}, 'install', {str(tmp_path / 'b1')!r}, '--target', {str(tmp_path / 'site')!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'})))\n")
    res = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=ROOT, env=NO_PYTHONPATH, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
    assert "installed tinypkg-1.0" in res.stderr
    assert (tmp_path / "site/tinypkg/big.bin").is_file()


def test_every_command_line_reaches_the_same_commands(wheels, tmp_path):
    build(wheels, "1.0", tmp_path / "b1")
    for argv in (["run.py", "bundle"], ["-m", "harness.bundle"], ["harness/bundle/install.py"]):
        res = subprocess.run([sys.executable, *argv, "show", str(tmp_path / "b1")], cwd=ROOT, capture_output=True,
                             text=True)
        assert res.returncode == 0, (argv, res.stderr)
        assert res.stdout.startswith("tinypkg-1.0: full bundle of tinypkg 1.0"), argv
        res = subprocess.run([sys.executable, *argv, "show", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 2 and res.stderr.strip() == f"error: {tmp_path}: no manifest.json: not a bundle directory"
    res = subprocess.run([sys.executable, "harness/bundle/install.py", "build", "--vllm", "0.21.0"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "invalid choice: 'build'" in res.stderr  # the node cannot build


def test_the_harness_command_line_leaves_the_build_side_unimported():
    # On the node the harness runs with the node's packages, which do not include installer.
    code = ("import json, sys\nfrom harness import cli\ncli.build_parser()\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'installer'"
            " or m in ('harness.bundle.build', 'harness.bundle.resolve', 'harness.bundle.unpack'))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []
