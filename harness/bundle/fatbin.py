"""CUDA fat-binary compaction: keep, in an extension module, only the GPU code one architecture loads.

An extension's .nv_fatbin section holds one fat binary per translation unit
(the host code finds each through a pointer in .nvFatBinSegment). A fat binary is a 16-byte header
(magic 0xBA55ED50, version, header size, size of the entries) followed by entries, each a header
(kind 1 = PTX, 2 = ELF cubin; the architecture; payload size) and its payload. On an sm_XY device
the driver loads, per fat binary, a cubin of the same major version and minor <= Y if there is
one, else JIT-compiles PTX of an architecture <= XY. ``compact_fatbins`` keeps exactly those
entries, moves them to the front of their fat binary, rewrites its size and zeroes the rest, so
every pointer stays valid and the loader sees what nvcc would have built for that one
architecture. A fat binary with nothing usable keeps its smallest entry (unusable there before too).
"""

from __future__ import annotations

import struct
from pathlib import Path

from harness.errors import HarnessError

_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_HEADER = struct.Struct("<IHHQ")
_FATBIN_ENTRY = struct.Struct("<HHIQIIHHI")  # kind, version, header size, payload size, ..., arch


def _elf_section(data: bytes | bytearray, name: str) -> tuple[int, int] | None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if not shoff or shstrndx >= shnum:
        return None
    sec = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    stroff = sec[shstrndx][4]
    for sh_name, _typ, _flags, _addr, off, size in sec:
        end = data.index(b"\0", stroff + sh_name)
        if bytes(data[stroff + sh_name:end]).decode("ascii", "replace") == name:
            return off, size
    return None


def _fatbins(data: bytes | bytearray, off: int, size: int) -> list[tuple[int, list[dict]]]:
    """[(fat binary offset, [entries])] of an .nv_fatbin section; ValueError if it does not parse."""
    out = []
    pos, end = off, off + size
    while pos < end:
        if end - pos < _FATBIN_HEADER.size or struct.unpack_from("<I", data, pos)[0] != _FATBIN_MAGIC:
            if any(data[pos:min(pos + 8, end)]):  # only zero padding may sit between fat binaries
                raise ValueError(f"unexpected bytes at {pos:#x} in .nv_fatbin")
            pos += 8
            continue
        _magic, _ver, hsize, fsize = _FATBIN_HEADER.unpack_from(data, pos)
        entries, e, stop = [], pos + hsize, pos + hsize + fsize
        if stop > end:
            raise ValueError(f"fat binary at {pos:#x} runs past its section")
        while e < stop:
            kind, _v, ehsize, psize, _c, _u, _mi, _ma, arch = _FATBIN_ENTRY.unpack_from(data, e)
            if kind not in (1, 2) or ehsize < _FATBIN_ENTRY.size or e + ehsize + psize > stop:
                raise ValueError(f"bad fat binary entry at {e:#x}")
            entries.append({"at": e, "kind": kind, "arch": arch, "length": ehsize + psize})
            e += ehsize + psize
        if e != stop:
            raise ValueError(f"fat binary at {pos:#x}: entries do not fill it")
        out.append((pos, entries))
        pos = stop
    return out


def _usable(entry: dict, arch: int) -> str | None:
    if entry["kind"] == 2 and entry["arch"] // 10 == arch // 10 and entry["arch"] <= arch:
        return "cubin"
    if entry["kind"] == 1 and entry["arch"] <= arch:
        return "ptx"
    return None


def compact_fatbins(path: Path, arch: int) -> dict | None:
    """Compact the ELF file at `path` in place (see ``compact_fatbin_data``)."""
    data = bytearray(path.read_bytes())
    res = compact_fatbin_data(data, arch, str(path))
    if res:
        path.write_bytes(data)
    return res


def compact_fatbin_data(data: bytearray, arch: int, name: str) -> dict | None:
    """Keep, in every fat binary of an ELF image, only the entries an sm_<arch> device loads (see
    above); `data` is changed in place, its length kept. Returns what changed, or None when the
    image has no fat binary or nothing to drop. `name` names the file in errors."""
    sec = _elf_section(data, ".nv_fatbin")
    if sec is None:
        return None
    try:
        fatbins = _fatbins(data, *sec)
    except ValueError as e:
        raise HarnessError(f"{name}: cannot parse its CUDA fat binaries ({e}); build without --cuda-arch") from None
    removed = removed_bytes = 0
    kept_archs: dict[str, int] = {}
    for start, entries in fatbins:
        cubins = [x for x in entries if _usable(x, arch) == "cubin"]
        keep = cubins or [x for x in entries if _usable(x, arch) == "ptx"] or [min(entries, key=lambda x: x["length"])]
        if len(keep) == len(entries):
            continue
        if any(x["length"] % 8 for x in keep):
            raise HarnessError(f"{name}: fat binary entry not 8-byte aligned; build without --cuda-arch")
        _m, ver, hsize, fsize = _FATBIN_HEADER.unpack_from(data, start)
        body = b"".join(bytes(data[x["at"]:x["at"] + x["length"]]) for x in keep)
        region = start + hsize
        data[region:region + fsize] = body + bytes(fsize - len(body))
        _FATBIN_HEADER.pack_into(data, start, _FATBIN_MAGIC, ver, hsize, len(body))
        removed += len(entries) - len(keep)
        removed_bytes += fsize - len(body)
        for x in keep:
            k = f"{'sm' if x['kind'] == 2 else 'compute'}_{x['arch']}"
            kept_archs[k] = kept_archs.get(k, 0) + 1
    if not removed:
        return None
    return {"entries_removed": removed, "bytes_zeroed": removed_bytes, "kept": dict(sorted(kept_archs.items()))}
