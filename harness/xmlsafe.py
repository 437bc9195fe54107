"""Text that XML 1.0 can carry, and back.

XML 1.0 cannot hold most C0 control characters (an ANSI colour escape, NUL, binary junk a broken
interpreter printed), U+FFFE/U+FFFF or lone surrogates; a parser turns a tab or a newline in an
attribute into a space, and a carriage return anywhere into a newline. Every JUnit file the harness writes goes through `sanitise` (the one writer
path, `atomic.write_junit`), which writes each such character as ``\\xHH`` or ``\\uHHHH``; every
reader decodes them (`decode`). A backslash that would read as such an escape is itself written as
``\\x5c``, so the mapping is one-to-one: two step names that differ only by a tab and a space stay
two names, and a literal ``\\x1b`` in a traceback reads back as the four characters it was.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element

_ILLEGAL = "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]"
_TEXT_RE = re.compile(f"{_ILLEGAL}|\r")  # a parser reads a CR (or CR LF) in text as LF
_ATTRIBUTE_RE = re.compile(f"{_ILLEGAL}|[\t\n\r]")  # legal, but a parser normalises them to spaces
# what `decode` turns back into a character: only characters `encode` escapes, and the backslash
_DECODABLE = re.compile(r"[\x00-\x1f\\\ud800-\udfff\ufffe\uffff]")
_TOKEN = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))")


def _decoded(m: re.Match) -> str | None:
    ch = chr(int(m.group(1) or m.group(2), 16))
    return ch if _DECODABLE.fullmatch(ch) else None


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def encode(text: str, attribute: bool = False) -> str:
    """`text` with every character XML 1.0 cannot carry, and CR, escaped (in an attribute also tab and LF)."""
    pattern = _ATTRIBUTE_RE if attribute else _TEXT_RE
    if "\\" not in text and not pattern.search(text):
        return text  # the common case costs one scan
    out, i = [], 0
    for m in _TOKEN.finditer(text):  # a literal backslash that would read back as an escape
        if _decoded(m) is not None:
            out.append(pattern.sub(lambda c: _escape(c.group()), text[i:m.start()]))
            out.append("\\x5c" + m.group()[1:])
            i = m.end()
    out.append(pattern.sub(lambda c: _escape(c.group()), text[i:]))
    return "".join(out)


def decode(text: str) -> str:
    """The inverse of `encode`; text that holds no escape comes back unchanged."""
    if "\\" not in text:
        return text
    return _TOKEN.sub(lambda m: _decoded(m) or m.group(), text)


def sanitise(root: Element) -> None:
    """Make every attribute, text and tail under `root` XML-safe, in place."""
    for elem in root.iter():
        for key, value in elem.attrib.items():
            if isinstance(value, str):
                elem.attrib[key] = encode(value, attribute=True)
        if elem.text:
            elem.text = encode(elem.text)
        if elem.tail:
            elem.tail = encode(elem.tail)


def restore(root: Element) -> None:
    """The inverse of `sanitise`, in place: for a tree read back to be written again."""
    for elem in root.iter():
        for key, value in elem.attrib.items():
            if isinstance(value, str):
                elem.attrib[key] = decode(value)
        if elem.text:
            elem.text = decode(elem.text)
        if elem.tail:
            elem.tail = decode(elem.tail)


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """`text` for a terminal: control characters (an ESC would drive the terminal) and lone
    surrogates (which no encoder writes) escaped, as in the JUnit files."""
    return _UNPRINTABLE.sub(lambda c: _escape(c.group()), str(text))


def one_line(text: str, limit: int | None = None, cut: str = "…") -> str:
    """`text` on one line: every run of whitespace (line breaks too) one space; longer than
    `limit` characters, its first ``limit - 1`` followed by `cut`."""
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + cut
