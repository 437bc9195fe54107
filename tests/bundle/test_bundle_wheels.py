"""The build side: which wheel is taken, how it lands in the tree, what the manifest says."""

from __future__ import annotations

import zipfile

import pytest
from packaging.specifiers import SpecifierSet

from harness.bundle import install as node
from harness.bundle import resolve, unpack
from harness.errors import HarnessError
from tests.fixtures import PY, build, make_wheel

PLATFORMS = ("manylinux_2_17_x86_64", "linux_x86_64")

#: The top-level keys of a format-1 manifest: what installers already carried to nodes read.
FORMAT_1_KEYS = {"format", "name", "package", "version", "kind", "python", "python_tag", "platforms", "cuda_arch",
                 "created", "base", "wheels", "target_requirements", "conflicts", "left_out", "dropped",
                 "compacted", "payload", "parts", "tree_sha256", "files"}


def test_the_manifest_keeps_format_1(wheels, tmp_path):
    m = build(wheels, "1.0", tmp_path / "b1")
    assert m["format"] == node.FORMAT == 1
    assert set(m) == FORMAT_1_KEYS
    assert set(m["payload"]) == {"files", "deleted", "bytes"}
    assert all(set(w) == {"name", "version", "wheel", "sha256", "role"} for w in m["wheels"])
    assert all(set(f) == {"sha256", "size", "exec"} for f in m["files"].values())


def test_the_highest_version_then_build_number_that_fits_is_taken(tmp_path):
    for name in ("pkg-1.0-py3-none-any.whl", "pkg-1.0-2-py3-none-any.whl", "pkg-1.0-10-py3-none-any.whl",
                 "pkg-1.1-cp311-cp311-manylinux_2_17_x86_64.whl", "pkg-2.0-py3-none-win_amd64.whl",
                 "Pkg_Other-3.0-py3-none-any.whl", "not a wheel.whl"):
        (tmp_path / name).write_bytes(b"")
    assert resolve.local_wheel("PKG", SpecifierSet(), tmp_path, "3.12", PLATFORMS).name == "pkg-1.0-10-py3-none-any.whl"
    assert resolve.local_wheel("pkg", SpecifierSet(), tmp_path, "3.11", PLATFORMS).name.startswith("pkg-1.1-")
    assert resolve.local_wheel("pkg", SpecifierSet(">=2"), tmp_path, "3.12", PLATFORMS) is None
    assert resolve.local_wheel("pkg.other", SpecifierSet(), tmp_path, "3.12", PLATFORMS).name.startswith("Pkg_Other")


def test_a_broken_wheel_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(HarnessError, match=rf"^{bad}: not a readable wheel \(BadZipFile"):
        resolve.wheel_metadata(bad)
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("bad-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: bad\nVersion: 1.0\n"
                   "Requires-Dist: ???\n\n")
    with pytest.raises(HarnessError, match=rf"^{bad}: not a readable wheel"):
        resolve.wheel_metadata(bad)


def test_requirements_read_with_packaging(tmp_path):
    whl = make_wheel(tmp_path, "Some_Pkg", "1.0", {"some_pkg.py": b""},
                     requires=["Dep.One>=1,<3", "dep-two; python_version < '3'", "dep3[extra]==2; sys_platform == 'linux'",
                               "winonly; sys_platform == 'win32'", "opt; extra == 'cli'"])
    meta = resolve.wheel_metadata(whl)
    assert (meta.name, meta.version) == ("some-pkg", "1.0")
    assert [(n, str(s)) for n, s in resolve.requirements(whl, PY)] == [("dep-one", "<3,>=1"), ("dep3", "==2")]


def test_data_folders_scripts_and_entry_points_land_as_pip_install_target_puts_them(tmp_path):
    wd = tmp_path / "wheels"
    wd.mkdir()
    data = "datapkg-1.0.data"
    make_wheel(wd, "datapkg", "1.0", {
        "datapkg/__init__.py": b"X = 1\n",
        f"{data}/scripts/runme": b"#!python\nprint('hi')\n",
        f"{data}/platlib/datapkg_native.py": b"Y = 2\n",
        f"{data}/headers/datapkg.h": b"int x;\n",
        f"{data}/data/share/datapkg.txt": b"data\n",
        "datapkg-1.0.dist-info/entry_points.txt": b"[console_scripts]\ndatapkg = datapkg:main\n",
    })
    m = build(wd, "1.0", tmp_path / "b", package="datapkg", deps=[])
    files = m["files"]
    assert files["bin/runme"]["exec"] is True  # a script is executable whatever its zip mode
    assert "datapkg_native.py" in files
    assert not [r for r in files if r.endswith(("datapkg.h", "datapkg.txt"))]
    assert "bin/datapkg" not in files  # no launcher: the tree is used through PYTHONPATH
    node.install([tmp_path / "b"], tmp_path / "site", log=lambda m: None)
    site = tmp_path / "site"
    assert (site / "bin/runme").read_bytes() == b"#!python\nprint('hi')\n"  # copied as it is
    record = (site / "datapkg-1.0.dist-info/RECORD").read_text()
    assert "bin/runme," in record and "\ndatapkg_native.py," in record and "./" not in record
    assert unpack.check_records(site) == [f"{node.STAMP}: in no RECORD"]
    assert (site / "datapkg-1.0.dist-info/INSTALLER").read_bytes() == unpack.INSTALLER_NAME


def test_check_records_finds_each_kind_of_inconsistency(wheels, tmp_path):
    build(wheels, "1.0", tmp_path / "b1")
    site = tmp_path / "site"
    node.install([tmp_path / "b1"], site, log=lambda m: None)
    (site / "tinypkg/__init__.py").write_text("changed\n")
    (site / "tinypkg/old.py").unlink()
    (site / "stray.py").write_text("")
    assert sorted(unpack.check_records(site)) == sorted([
        f"{node.STAMP}: in no RECORD", "stray.py: in no RECORD",
        "tinypkg/__init__.py: hash differs from tinypkg-1.0.dist-info/RECORD",
        "tinypkg/old.py: listed in tinypkg-1.0.dist-info/RECORD but missing"])
    (site / "tinydep-1.5.dist-info/RECORD").write_text("only,two\n")
    assert any(p.startswith("tinydep-1.5.dist-info/RECORD: unreadable") for p in unpack.check_records(site))


def test_two_builds_of_the_same_wheels_give_the_same_tree(wheels, tmp_path):
    a = build(wheels, "1.0", tmp_path / "a", cuda_arch=90)
    b = build(wheels, "1.0", tmp_path / "b", cuda_arch=90)
    assert a["tree_sha256"] == b["tree_sha256"]
    assert [p["sha256"] for p in a["parts"]] == [p["sha256"] for p in b["parts"]]
    assert [d["path"] for d in a["dropped"]] == sorted(d["path"] for d in a["dropped"])
    assert [c["path"] for c in a["compacted"]] == ["tinypkg/_cuda.so"]
