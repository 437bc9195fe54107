"""Offline bundles: built from small wheels made here, never from the network."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import lzma
import tarfile
from pathlib import Path

import pytest

from harness.bundle import cli, defaults, install as node, pack, resolve, unpack
from harness.bundle import fatbin as cuda
from harness.errors import HarnessError, InputError
from tests.fixtures import (E80, E90, E120, P80, PYTAG, ROOT, build, cuda_so, fake_elf, fatbin, fatbin_entry,
                            make_wheel, sha, wheel_files)

def test_full_bundle_drops_listed_files_and_other_pythons(wheels, tmp_path):
    m = build(wheels, "1.0", tmp_path / "b1")
    dropped = {d["path"]: d["rule"] for d in m["dropped"]}
    assert dropped == {"tinypkg/_drop_me.so": "tinypkg/_drop_me.so",
                       "tinypkg/ext.cpython-39-x86_64-linux-gnu.so": "extension module for another Python version"}
    assert f"tinypkg/ext.cpython-{PYTAG}-x86_64-linux-gnu.so" in m["files"]
    assert not set(dropped) & set(m["files"])
    assert m["kind"] == "full" and m["base"] is None
    assert {w["name"]: w["version"] for w in m["wheels"]} == {"tinypkg": "1.0", "tinydep": "1.5", "subdep": "0.1"}
    assert {t["name"]: t["specifier"] for t in m["target_requirements"]} == {"presentpkg": ">=1,>=2"}
    assert m["left_out"] == ["notbundled"]
    assert m["files"]["tinypkg/tool"]["exec"] is True
    assert m["tree_sha256"] == node.tree_digest(m["files"])
    # the bundle carries its own installer
    assert (tmp_path / "b1" / node.INSTALLER).read_bytes() == Path(node.__file__).read_bytes()


def test_parts_are_bounded_and_round_trip_through_install(wheels, tmp_path):
    m = build(wheels, "1.0", tmp_path / "b1", part_size=40 * 1024)
    parts = [tmp_path / "b1" / p["name"] for p in m["parts"]]
    assert len(parts) > 1 and all(p.stat().st_size <= 40 * 1024 for p in parts)
    assert [p["sha256"] for p in m["parts"]] == [sha(p.read_bytes()) for p in parts]
    joined = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(joined))) as tf:
        assert sorted(tf.getnames()) == sorted(m["payload"]["files"])

    target = tmp_path / "site"
    stamp = node.install([tmp_path / "b1"], target, log=lambda msg: None)
    assert stamp["tree_sha256"] == m["tree_sha256"]
    tree = pack.scan_tree(target)
    assert tree.pop(node.STAMP) and tree == m["files"]
    original = wheel_files(wheels / "tinypkg-1.0-py3-none-any.whl")
    for rel in ("tinypkg/big.bin", "tinypkg/__init__.py", f"tinypkg/ext.cpython-{PYTAG}-x86_64-linux-gnu.so"):
        assert (target / rel).read_bytes() == original[rel]
    assert os.access(target / "tinypkg/tool", os.X_OK)
    assert unpack.check_records(target) == [f"{node.STAMP}: in no RECORD"]
    # the RECORD no longer lists what was dropped
    assert "_drop_me.so" not in (target / "tinypkg-1.0.dist-info/RECORD").read_text()
    # installing again is a no-op; another bundle over it needs --force
    assert node.install([tmp_path / "b1"], target, log=lambda msg: None)["name"] == "tinypkg-1.0"


def test_without_the_xz_program_the_standard_library_compresses(wheels, tmp_path, monkeypatch):
    monkeypatch.setattr(pack.shutil, "which", lambda name: None)
    m = build(wheels, "1.0", tmp_path / "b1")
    node.install([tmp_path / "b1"], tmp_path / "site", log=lambda msg: None)
    assert (tmp_path / "site/tinypkg/big.bin").stat().st_size == m["files"]["tinypkg/big.bin"]["size"]


def test_corrupted_or_missing_part_is_refused(wheels, tmp_path):
    m = build(wheels, "1.0", tmp_path / "b1", part_size=40 * 1024)
    part = tmp_path / "b1" / m["parts"][1]["name"]
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"part .*{m['parts'][1]['name']} is corrupt: sha256"):
        node.install([tmp_path / "b1"], tmp_path / "site", log=lambda msg: None)
    assert not (tmp_path / "site").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".site")] == []
    with pytest.raises(InputError, match="is corrupt"):
        node.verify([tmp_path / "b1"], log=lambda msg: None)
    part.write_bytes(bytes(data[:-1]))
    with pytest.raises(InputError, match="is corrupt: .* bytes, expected"):
        node.install([tmp_path / "b1"], tmp_path / "site", log=lambda msg: None)
    part.unlink()
    with pytest.raises(InputError, match=f"part {m['parts'][1]['name']} is missing"):
        node.install([tmp_path / "b1"], tmp_path / "site", log=lambda msg: None)


def test_delta_holds_only_changed_files(wheels, tmp_path):
    m1 = build(wheels, "1.0", tmp_path / "b1")
    m2 = build(wheels, "2.0", tmp_path / "b2", delta_against=tmp_path / "b1")
    assert m2["kind"] == "delta"
    assert m2["base"] == {"name": "tinypkg-1.0", "tree_sha256": m1["tree_sha256"]}
    f1, f2 = m1["files"], m2["files"]
    changed = sorted(r for r in f2 if r not in f1 or f1[r]["sha256"] != f2[r]["sha256"])
    assert m2["payload"]["files"] == changed
    assert "tinypkg/__init__.py" in changed and "tinypkg/new.py" in changed
    assert "tinypkg/big.bin" not in changed and "tinypkg/_cuda.so" not in changed
    assert "tinypkg/old.py" in m2["payload"]["deleted"]
    assert "tinypkg-1.0.dist-info/METADATA" in m2["payload"]["deleted"]
    assert sum(p["size"] for p in m2["parts"]) < sum(p["size"] for p in m1["parts"]) / 4


def test_install_applies_a_delta_over_its_base_bundle_or_an_installed_base(wheels, tmp_path):
    build(wheels, "1.0", tmp_path / "b1")
    m2 = build(wheels, "2.0", tmp_path / "b2", delta_against=tmp_path / "b1")
    full2 = build(wheels, "2.0", tmp_path / "full2")
    assert full2["tree_sha256"] == m2["tree_sha256"]
    quiet = {"log": lambda msg: None}

    node.install([tmp_path / "b1", tmp_path / "b2"], tmp_path / "from-bundles", **quiet)
    node.install([tmp_path / "b1"], tmp_path / "v1", **quiet)
    node.install([tmp_path / "b2"], tmp_path / "from-installed", base_target=tmp_path / "v1", **quiet)
    node.install([tmp_path / "full2"], tmp_path / "full", **quiet)
    trees = [pack.scan_tree(tmp_path / d) for d in ("from-bundles", "from-installed", "full")]
    for t in trees:
        t.pop(node.STAMP)
        assert t == m2["files"]
    assert not (tmp_path / "from-installed/tinypkg/old.py").exists()
    assert (tmp_path / "from-installed/tinypkg/__init__.py").read_text() == "VERSION = '2.0'\n"
    # the base install is left as it was
    assert (tmp_path / "v1/tinypkg/__init__.py").read_text() == "VERSION = '1.0'\n"
    assert (tmp_path / "v1/tinypkg/old.py").exists()

    with pytest.raises(InputError, match="is a delta over tinypkg-1.0"):
        node.install([tmp_path / "b2"], tmp_path / "nobase", **quiet)
    with pytest.raises(InputError, match="does not hold tinypkg-1.0"):
        node.install([tmp_path / "b2"], tmp_path / "nobase", base_target=tmp_path / "full", **quiet)
    with pytest.raises(InputError, match="exists and holds tinypkg-1.0"):
        node.install([tmp_path / "full2"], tmp_path / "v1", **quiet)
    node.install([tmp_path / "full2"], tmp_path / "v1", force=True, **quiet)
    assert (tmp_path / "v1/tinypkg/__init__.py").read_text() == "VERSION = '2.0'\n"
    with pytest.raises(InputError, match="give one bundle, preceded only by its base bundles"):
        node.install([tmp_path / "full2", tmp_path / "b1"], tmp_path / "two", **quiet)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep")
    with pytest.raises(InputError, match="holds no installed bundle: not replacing it"):
        node.install([tmp_path / "full2"], tmp_path / "mine", force=True, **quiet)


def test_a_delta_that_is_not_smaller_becomes_a_full_bundle(wheels, tmp_path):
    make_wheel(wheels, "other", "1.0", {"other/a.py": b"a = 1\n"})
    make_wheel(wheels, "other", "2.0", {"other/a.py": b"a = 2\n"})
    build(wheels, "1.0", tmp_path / "o1", package="other", deps=[])
    m = build(wheels, "2.0", tmp_path / "o2", package="other", deps=[], delta_against=tmp_path / "o1")
    assert m["kind"] == "full" and m["payload"]["deleted"] == []


def test_stage_gathers_parts_carried_in_several_transfers(wheels, tmp_path):
    m = build(wheels, "1.0", tmp_path / "b1", part_size=40 * 1024)
    names = [p["name"] for p in m["parts"]]
    first, second = tmp_path / "transfer1", tmp_path / "transfer2"
    for d, keep in ((first, names[:1]), (second, names[1:])):
        d.mkdir()
        shutil.copy(tmp_path / "b1" / node.MANIFEST, d)
        for n in keep:
            shutil.copy(tmp_path / "b1" / n, d)
    stash = tmp_path / "stash"
    quiet = {"log": lambda msg: None}
    assert node.stage([first], stash, **quiet)["tinypkg-1.0"]["missing"] == names[1:]
    with pytest.raises(InputError, match="is missing"):
        node.install([first], tmp_path / "site", **quiet)
    assert node.stage([second], stash, **quiet)["tinypkg-1.0"]["missing"] == []
    node.install([second], tmp_path / "site", stash=stash, **quiet)
    node.install([stash / "tinypkg-1.0"], tmp_path / "site2", **quiet)
    assert (tmp_path / "site/tinypkg/big.bin").read_bytes() == (tmp_path / "site2/tinypkg/big.bin").read_bytes()


def test_install_refuses_another_python(wheels, tmp_path):
    build(wheels, "1.0", tmp_path / "b1", python_version="3.99")
    with pytest.raises(InputError, match=r"built for Python 3\.99"):
        node.install([tmp_path / "b1"], tmp_path / "site", log=lambda msg: None)
    node.install([tmp_path / "b1"], tmp_path / "site", check_python=False, log=lambda msg: None)


def test_fat_binaries_keep_only_what_the_architecture_loads(tmp_path):
    so = tmp_path / "k.so"
    so.write_bytes(cuda_so())
    res = cuda.compact_fatbins(so, 90)
    assert res == {"entries_removed": 4, "bytes_zeroed": 4 * 64 + 3 * 512 + 512,
                   "kept": {"compute_80": 1, "sm_120": 1, "sm_90": 1}}
    data = so.read_bytes()
    assert len(data) == len(cuda_so())
    off, size = cuda._elf_section(data, ".nv_fatbin")
    kept = [[(e["kind"], e["arch"], data[e["at"] + 64:e["at"] + e["length"]]) for e in es]
            for _, es in cuda._fatbins(data, off, size)]
    # with an sm_90 cubin: only it; with PTX <= 90: only the PTX; with neither: the smallest entry
    assert kept == [[(2, 90, E90)], [(1, 80, P80)], [(2, 120, E120[:256])]]
    assert cuda.compact_fatbins(so, 90) is None  # nothing left to drop
    # an sm_86 device loads sm_80 cubins
    so.write_bytes(cuda_so())
    assert cuda.compact_fatbins(so, 86)["kept"] == {"sm_120": 1, "sm_80": 2}


def test_compaction_in_a_build_keeps_records_consistent(wheels, tmp_path):
    m = build(wheels, "1.0", tmp_path / "b1", cuda_arch=90)
    assert [c["path"] for c in m["compacted"]] == ["tinypkg/_cuda.so"]
    node.install([tmp_path / "b1"], tmp_path / "site", log=lambda msg: None)
    assert unpack.check_records(tmp_path / "site") == [f"{node.STAMP}: in no RECORD"]
    assert (tmp_path / "site/tinypkg/_cuda.so").read_bytes() != cuda_so()


def test_unparseable_fat_binary_stops_the_build(tmp_path):
    so = tmp_path / "bad.so"
    for section in (fatbin(fatbin_entry(2, 80, E80)) + b"garbage!",  # neither padding nor a fat binary
                    fatbin(fatbin_entry(2, 80, E80))[:-8],  # an entry runs past its fat binary
                    fatbin(fatbin_entry(7, 80, E80))):  # an unknown kind of entry
        so.write_bytes(fake_elf({".nv_fatbin": section}))
        with pytest.raises(HarnessError, match="cannot parse its CUDA fat binaries"):
            cuda.compact_fatbins(so, 90)


def test_installer_in_the_bundle_runs_with_the_standard_library_alone(wheels, tmp_path):
    build(wheels, "1.0", tmp_path / "b1")
    code = (
        "import sys, json\n"
        f"sys.argv = ['install.py', 'install', {str(tmp_path / 'b1')!r}, '--target', {str(tmp_path / 'site')!r}]\n"
        "import runpy\n"
        "try:\n"
        f"    runpy.run_path({str(tmp_path / 'b1' / node.INSTALLER)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "extra = sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'})\n"
        "print(json.dumps(extra))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
    assert "installed tinypkg-1.0" in res.stderr
    assert (tmp_path / "site/tinypkg/big.bin").is_file()


def test_script_and_module_entry_points(wheels, tmp_path):
    build(wheels, "1.0", tmp_path / "b1", part_size=40 * 1024)
    part = tmp_path / "b1" / "tinypkg-1.0.tar.xz.001"
    for argv in ([sys.executable, "harness/bundle/install.py"], [sys.executable, "-m", "harness.bundle"]):
        res = subprocess.run([*argv, "verify", str(tmp_path / "b1")], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "all sha256 match" in res.stderr
    good = part.read_bytes()
    part.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    res = subprocess.run([sys.executable, "harness/bundle/install.py", "install", str(tmp_path / "b1"), "--target",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: bundle tinypkg-1.0: part ")
    assert cli.main(["show", str(tmp_path / "b1")]) == 0


def test_local_wheels_are_matched_to_the_target_python_and_platform():
    fits = resolve.wheel_fits
    platforms = defaults.DEFAULT_PLATFORMS
    assert fits("a-1.0-py3-none-any.whl", "3.12", platforms)
    assert fits("vllm-0.21.0-1-cp38-abi3-manylinux_2_24_x86_64.whl", "3.12", platforms)
    assert fits("x-1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "3.12", platforms)
    assert not fits("x-1-cp311-cp311-manylinux_2_17_x86_64.whl", "3.12", platforms)
    assert not fits("x-1-cp313-abi3-manylinux_2_17_x86_64.whl", "3.12", platforms)
    assert not fits("x-1-cp312-cp312-manylinux_2_17_aarch64.whl", "3.12", platforms)
    assert not fits("x-1-cp312-cp312-win_amd64.whl", "3.12", platforms)
