"""The text of a trading export, whatever Unicode form the terminal or a script saved it in.

One function, :func:`decode_text`, shared by every reader of the trading context (package CSV
dumps, terminal HTML and Excel reports): UTF-8 with or without a byte-order mark, UTF-16 LE or
BE with one, and UTF-16 without one when the bytes leave no doubt. Anything else raises
:class:`UndecodableTextError`, which names the line it failed on and never echoes the bytes.
"""

from __future__ import annotations

import codecs

from fxcrm_core.kernel.errors import ValidationError

__all__ = ["UndecodableTextError", "decode_text"]

# UTF-32's marks come first: the UTF-32 LE mark begins with the UTF-16 LE one.
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_NAMES = {"utf-8": "UTF-8", "utf-16-le": "UTF-16 LE", "utf-16-be": "UTF-16 BE"}
# Without a mark, UTF-16 is taken only when at least this share of the 2-byte units has its NUL
# on one side and none on the other: what ASCII-heavy exports (digits, dates, codes) look like.
_BOMLESS_SHARE = 0.5
_SAMPLE_UNITS = 4096


class UndecodableTextError(ValidationError):
    """The bytes are not text in any encoding this SDK reads; nothing was imported.

    ``line`` is the 1-based line on which decoding failed (1 when the whole file is refused).
    """

    default_message = "the file is not UTF-8 or UTF-16 text"

    def __init__(self, message: str | None = None, *, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


def _bomless_utf16(data: bytes) -> str | None:
    """``utf-16-le``/``-be`` when the NUL bytes sit on one side of the 2-byte units only."""
    if len(data) % 2:
        return None
    sample = data[: 2 * _SAMPLE_UNITS]
    units = len(sample) // 2
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    if odd_nuls >= units * _BOMLESS_SHARE and even_nuls == 0:
        return "utf-16-le"
    if even_nuls >= units * _BOMLESS_SHARE and odd_nuls == 0:
        return "utf-16-be"
    return None


def decode_text(data: bytes) -> str:
    """The text of ``data``, without its byte-order mark.

    Read as: UTF-8 (with or without a BOM); UTF-16 LE or BE with a BOM (what MT5 terminals
    save); UTF-16 without a BOM only when the NUL bytes all fall on one side of the 2-byte units
    and fill at least half of them (ASCII-heavy text), so the byte order is not a guess. UTF-32,
    other NUL-bearing bytes, and invalid sequences raise :class:`UndecodableTextError` with the
    line of the first bad byte. Line breaks are left as they are.

    >>> decode_text(b"\\xff\\xfet\\x00i\\x00")
    'ti'
    >>> decode_text(b"\\xef\\xbb\\xbfticket")
    'ticket'
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError("decode_text takes bytes")
    data = bytes(data)
    if data.startswith(_UTF32_BOMS):
        raise UndecodableTextError("the file is UTF-32: save it as UTF-8 or UTF-16")
    bom, encoding = next(((b, e) for b, e in _BOMS if data.startswith(b)), (b"", ""))
    if not encoding:
        if b"\x00" in data:
            guessed = _bomless_utf16(data)
            if guessed is None:
                raise UndecodableTextError(
                    "the file holds NUL bytes but is not recognisably UTF-16: save it as UTF-8 "
                    "or as UTF-16 with a byte-order mark"
                )
            encoding = guessed
        else:
            encoding = "utf-8"
    body = data[len(bom) :]
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as error:
        # The prefix before the bad byte decodes by definition (cut at a unit boundary).
        start = error.start - error.start % 2 if encoding != "utf-8" else error.start
        line = body[:start].decode(encoding, errors="replace").count("\n") + 1
        raise UndecodableTextError(
            f"the file is not valid {_NAMES[encoding]} text from line {line} on", line=line
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UndecodableTextError(f"the text holds a NUL character on line {line}", line=line)
    return text
