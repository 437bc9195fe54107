"""Reading a user's file with a size cap, refusing what is not a regular file.

A FIFO blocks `open()` until someone writes into it, /dev/zero never ends, a directory cannot be
read: each is refused with one line before a byte is read. A file larger than the cap is refused
(or, with ``tail=True``, only its last ``limit`` bytes are read, as `classify` wants of a long log).
"""

from __future__ import annotations

import os
import stat
from typing import Callable

Fail = Callable[[str], Exception]  # the message -> the error the caller raises (names file and key)


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def read(path: str | os.PathLike, limit: int, fail: Fail, expected: str = "a regular file", *,
         tail: bool = False) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; `expected` names what it should
    be ("a YAML file") in the message that refuses anything else."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"is {_kind(st.st_mode)}, expected {expected}")
        # O_NONBLOCK: should the path have become a FIFO since the stat, open must not hang on it
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise fail("no such file") from None
    except NotADirectoryError:
        raise fail("no such file (a part of the path is not a directory)") from None
    except OSError as e:
        raise fail(f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"is {_kind(st.st_mode)}, expected {expected}")
        if st.st_size > limit:
            if not tail:
                raise fail(f"file is {st.st_size} bytes, larger than the {limit} this harness reads")
            os.lseek(fd, st.st_size - limit, os.SEEK_SET)
        chunks, left = [], limit + 1
        while left > 0:  # a file that grows while it is read is still capped
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise fail(f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        if not tail:
            raise fail(f"file is larger than the {limit} bytes this harness reads")
        data = data[-limit:]
    return data
