"""restic tree blobs, encoded byte for byte as restic 0.14 encodes them.

A tree blob's id is the SHA-256 of its bytes, so an unchanged directory only deduplicates across engines
(a snapshot by restic, the next by us, or the reverse) if we produce *exactly* restic's bytes. Python's
``json`` module cannot be coaxed into Go's output, so the encoder here is written by hand. What restic
0.14 (Debian, built with go1.19) does, verified against the binary by ``tests/integration/test_native_write.py``:

- A tree is ``{"nodes":[`` + the nodes, comma separated, + ``]}`` + ``"\\n"`` (restic's ``TreeJSONBuilder``
  appends the newline a ``json.Encoder`` would write). No whitespace anywhere. An empty directory is
  ``{"nodes":[]}\\n``. Nodes are sorted by name, bytewise on the UTF-8 name (Go string order).
- Each node is Go ``encoding/json`` of restic's ``Node`` struct: keys in struct field order ``name, type,
  mode, mtime, atime, ctime, uid, gid, user, group, inode, device_id, size, links, linktarget,
  extended_attributes, device, content, subtree, error``. ``omitempty`` drops zero ``mode``, ``user``,
  ``group``, ``inode``, ``device_id``, ``size``, ``links``, ``linktarget``, ``extended_attributes``,
  ``device``, ``subtree``, ``error``; ``uid``/``gid`` are always written; the three times are always
  written (``omitempty`` has no effect on a struct). ``content`` has no ``omitempty``: directories and
  symlinks carry ``"content":null``, an empty regular file ``"content":[]`` (so an empty file has no
  ``size`` key at all, but a ``content`` key).
- A node's *name* is first passed through Go's ``strconv.Quote`` (restic's ``Node.MarshalJSON``; the
  quotes are stripped, ``UnmarshalJSON`` unquotes): ``"`` and ``\\`` get a backslash, non-printable
  characters become ``\\a \\b \\f \\n \\r \\t \\v``, ``\\xNN`` (other ASCII controls and every byte that is
  not UTF-8 - this is how restic keeps such names lossless), ``\\u`` + 4 or ``\\U`` + 8 hex digits (other
  non-printable runes, e.g. U+00A0, U+00AD). "Printable" is Go's ``unicode.IsPrint``: categories L, M, N,
  P, S and the ASCII space; go1.19 has Unicode 13 tables, Python 3.11 Unicode 14, so a name using a
  character first assigned in Unicode 14 would be quoted differently (not seen in practice). So a file
  named ``a"b`` is stored as the JSON text ``"name":"a\\\\\\"b"``. Only the name:
  ``linktarget``, ``user`` etc. are plain strings.
- Strings (including the quoted name) then get Go's HTML-safe JSON escaping: ``"`` and ``\\`` backslash-
  escaped; ``\\n``, ``\\r``, ``\\t`` short; other control characters ``\\u00XX`` in lowercase hex (go1.19 has
  no ``\\b``/``\\f`` short forms - Go 1.22 added them, pass ``short_bf=True`` to mimic a restic built with it);
  ``<``, ``>``, ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026``; U+2028/U+2029 escaped; every other character
  raw UTF-8 (DEL too). Invalid UTF-8 (a ``surrogateescape`` surrogate) becomes U+FFFD, one per byte.
- Times are Go ``time.Time.MarshalJSON``: RFC 3339, nanoseconds with trailing zeros (and a bare ``.``)
  trimmed, ``Z`` for a zero offset else ``+hh:mm``. restic stores local time, so the offset is that of the
  machine's zone at that instant; :class:`GoTime` keeps nanoseconds and the offset exactly.
- ``mode`` is Go's ``os.FileMode`` (permission bits plus Go's own type bits: ``ModeDir`` = 1<<31,
  ``ModeSymlink`` = 1<<27, ``ModeSetuid`` = 1<<23, ...), not ``st_mode``: a 0o755 directory is 2147484141.
- Per node type (``NodeFromFileInfo`` + archiver on Linux): ``atime`` is set to ``mtime`` (restic's default
  without ``--with-atime``); ``size`` and ``links`` only for files; ``links`` and ``linktarget`` for
  symlinks; ``links`` and ``device`` (``st_rdev``) for device nodes; directories get neither. ``user`` and
  ``group`` are the names of ``uid``/``gid`` (empty, hence omitted, when unknown). Extended attributes are
  ``{"name":..,"value":<base64>}`` in the order the kernel lists them.
"""

from __future__ import annotations

import base64
import functools
import grp
import json
import os
import pwd
import re
import stat as stat_mod
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

# Go's os.FileMode type bits.
MODE_DIR = 1 << 31
MODE_APPEND = 1 << 30
MODE_EXCLUSIVE = 1 << 29
MODE_TEMPORARY = 1 << 28
MODE_SYMLINK = 1 << 27
MODE_DEVICE = 1 << 26
MODE_NAMED_PIPE = 1 << 25
MODE_SOCKET = 1 << 24
MODE_SETUID = 1 << 23
MODE_SETGID = 1 << 22
MODE_CHAR_DEVICE = 1 << 21
MODE_STICKY = 1 << 20
MODE_IRREGULAR = 1 << 19
MODE_PERM = 0o777
MODE_TYPE = MODE_DIR | MODE_SYMLINK | MODE_NAMED_PIPE | MODE_SOCKET | MODE_DEVICE | MODE_CHAR_DEVICE | MODE_IRREGULAR
_RESTIC_MASK = MODE_PERM | MODE_TYPE | MODE_SETUID | MODE_SETGID | MODE_STICKY

_NS = 1_000_000_000


@dataclass(frozen=True, order=True)
class GoTime:
    """A Go ``time.Time`` as restic records it: nanoseconds since the epoch and the zone offset in seconds."""

    unix_ns: int
    offset: int = 0

    def to_json(self) -> str:
        """Go's ``MarshalJSON`` text (RFC 3339 with trimmed nanoseconds), without quotes.

        Remembered on the instance (not a field: equality, order and hashing ignore it): a time read from a
        tree in Go's own form is that text already (:meth:`from_json`), and re-encoding an unchanged node
        reuses it instead of formatting it again.
        """
        cached: str | None = self.__dict__.get("_json")
        if cached is not None:
            return cached
        text = self._format()
        object.__setattr__(self, "_json", text)
        return text

    def _format(self) -> str:
        secs, nanos = divmod(self.unix_ns, _NS)
        days, rest = divmod(secs + self.offset, 86400)
        text = f"{_day_text(days)}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
        if nanos:
            text += "." + f"{nanos:09d}".rstrip("0")
        if self.offset == 0:
            return text + "Z"
        sign = "-" if self.offset < 0 else "+"
        minutes = abs(self.offset) // 60  # Go writes hours:minutes and drops offset seconds
        return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    @classmethod
    def from_json(cls, text: str) -> GoTime:
        fast = parse_go_text(text)
        return fast if fast is not None else cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> GoTime:
        """Any RFC 3339 time Go's ``UnmarshalJSON`` accepts (:meth:`from_json` takes Go's own text faster)."""
        m = _RFC3339.fullmatch(text)
        if m is None:
            raise ValueError(f"not an RFC 3339 time: {text!r}")
        year, month, day, hour, minute, second, frac, zone = m.groups()
        h, mi, sec = int(hour), int(minute), int(second)
        if h > 23 or mi > 59 or sec > 59:
            raise ValueError(f"not an RFC 3339 time: {text!r}")
        offset = 0
        if zone not in ("Z", "z"):
            sign = -1 if zone[0] == "-" else 1
            offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
        secs = _epoch_days(year, month, day) * 86400 + h * 3600 + mi * 60 + sec - offset
        nanos = int(frac.ljust(9, "0")[:9]) if frac else 0
        result = cls(secs * _NS + nanos, offset)
        if (
            text[10] == "T"
            and (zone == "Z" if offset == 0 else int(zone[4:6]) < 60)
            and (frac is None or (len(frac) <= 9 and frac[-1] != "0"))
        ):
            object.__setattr__(result, "_json", text)  # Go's canonical form: exactly what _format gives
        return result

    @classmethod
    def local(cls, unix_ns: int) -> GoTime:
        """The time as Go's ``time.Unix`` gives it: in the machine's local zone (``TZ``)."""
        return cls(unix_ns, local_offset(unix_ns // _NS))


def _new_time(unix_ns: int, offset: int, text: str) -> GoTime:
    """A GoTime whose canonical text is known (filling ``__dict__`` at once: several times faster than the
    frozen dataclass's ``__init__``, and this runs for two times of every node of every parent tree)."""
    result: GoTime = object.__new__(GoTime)
    result.__dict__.update(unix_ns=unix_ns, offset=offset, _json=text)
    return result


def parse_go_text(text: str) -> GoTime | None:
    """:meth:`GoTime.from_json` for the text Go itself writes (``2006-01-02T15:04:05.999999999Z07:00``, no
    trailing zeros in the fraction, an offset in whole minutes, ``Z`` for zero): the date and time of day
    and the zone are looked up in small caches (a tree's times share them), the fraction is one ``int``.
    None for anything else, which :meth:`GoTime.parse` handles (or rejects)."""
    seconds = _SECONDS.get(text[:19])
    if seconds is None:
        seconds = _date_seconds(text[:19])
        if seconds is None:
            return None
    if text[-1] == "Z":
        offset, frac = 0, text[20:-1]
    else:
        found = _ZONES.get(text[-6:])
        if found is None:
            found = _zone_offset(text[-6:])
            if found is None:
                return None
        offset, frac = found, text[20:-6]
    if frac:
        if text[19] != "." or len(frac) > 9 or frac[-1] == "0" or not frac.isdigit():
            return None
        nanos = int(frac) * _FRACTION_SCALE[len(frac)]
    elif len(text) != (20 if offset == 0 else 25):
        return None
    else:
        nanos = 0
    return _new_time((seconds - offset) * _NS + nanos, offset, text)


_FRACTION_SCALE = [10 ** (9 - digits) for digits in range(10)]
_SECONDS: dict[str, int] = {}
_ZONES: dict[str, int] = {}


def _date_seconds(text: str) -> int | None:
    """Seconds from the epoch to ``YYYY-MM-DDTHH:MM:SS`` (as if UTC), remembered; None if not that form."""
    if (
        len(text) != 19
        or text[4] != "-"
        or text[7] != "-"
        or text[10] != "T"
        or text[13] != ":"
        or text[16] != ":"
        or not (text[:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]).isdigit()
    ):
        return None
    h, mi, sec = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if h > 23 or mi > 59 or sec > 59:
        return None
    try:
        days = _epoch_days(text[:4], text[5:7], text[8:10])
    except ValueError:
        return None
    if len(_SECONDS) > 100_000:
        _SECONDS.clear()
    seconds = _SECONDS[text] = days * 86400 + h * 3600 + mi * 60 + sec
    return seconds


def _zone_offset(zone: str) -> int | None:
    """The offset of ``+HH:MM``/``-HH:MM`` as Go writes it (never ``+00:00``: that is ``Z``), remembered."""
    if len(zone) != 6 or zone[0] not in "+-" or zone[3] != ":" or not (zone[1:3] + zone[4:]).isdigit():
        return None
    minutes = int(zone[4:])
    offset = (int(zone[1:3]) * 3600 + minutes * 60) * (-1 if zone[0] == "-" else 1)
    if minutes > 59 or offset == 0:
        return None
    _ZONES[zone] = offset
    return offset


_offsets: dict[tuple[tuple[str, str], int], int] = {}


def local_offset(seconds: int) -> int:
    """The local zone's UTC offset at ``seconds`` since the epoch, remembered per minute (a backup asks
    for two times of every file, mostly in a few minutes). A minute is remembered only when its first and
    last second have the same offset, so a zone change inside it is never blurred; the key includes the
    zone's names, so ``time.tzset()`` after a ``TZ`` change is honoured."""
    key = (time.tzname, seconds // 60)
    found = _offsets.get(key)
    if found is not None:
        return found
    try:
        offset = time.localtime(seconds).tm_gmtoff
        if time.localtime(key[1] * 60).tm_gmtoff == offset == time.localtime(key[1] * 60 + 59).tm_gmtoff:
            if len(_offsets) > 100_000:
                _offsets.clear()
            _offsets[key] = offset
    except (OverflowError, OSError, ValueError):
        offset = 0
    return offset


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=4096)
def _epoch_days(year: str, month: str, day: str) -> int:
    """Days from 1970-01-01 to that date (cached: a tree's times fall on few dates; parsing dominated the
    walk of an unchanged backup). ``ValueError`` for a date that does not exist."""
    return date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL


@functools.lru_cache(maxsize=4096)
def _day_text(days: int) -> str:
    """``YYYY-MM-DD`` of the day ``days`` after 1970-01-01 (cached, as :func:`_epoch_days`)."""
    try:
        day = date.fromordinal(days + _EPOCH_ORDINAL)
    except ValueError:
        raise OverflowError(f"date out of range: {days} days after 1970-01-01") from None
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class ExtendedAttribute:
    name: str
    value: bytes


@dataclass(frozen=True)
class Node:
    """One entry of a restic tree; fields in restic's ``Node`` struct order (which is the JSON key order)."""

    name: str
    type: str
    mode: int = 0
    mtime: GoTime = field(default_factory=lambda: GoTime(0))
    atime: GoTime = field(default_factory=lambda: GoTime(0))
    ctime: GoTime = field(default_factory=lambda: GoTime(0))
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    inode: int = 0
    device_id: int = 0
    size: int = 0
    links: int = 0
    linktarget: str = ""
    extended_attributes: tuple[ExtendedAttribute, ...] = ()
    device: int = 0
    content: tuple[str, ...] | None = None
    subtree: str | None = None
    error: str = ""


def go_json_string(text: str, *, short_bf: bool = False) -> str:
    """``text`` as Go's ``encoding/json`` writes a string (HTML-safe escaping), including the quotes."""
    if _PLAIN.fullmatch(text):
        return f'"{text}"'
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in {'"', "\\"}:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif short_bf and ch == "\b":
            out.append("\\b")
        elif short_bf and ch == "\f":
            out.append("\\f")
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:  # a byte that was not UTF-8 (surrogateescape) or a lone surrogate
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_PLAIN = re.compile(r"[^\x00-\x1f\"\\<>&\u2028\u2029\ud800-\udfff]*")


def go_quote(name: str) -> str:
    """Go's ``strconv.Quote`` without the quotes, which restic 0.14 applies to a node's name before JSON.

    ``name`` is the file name as Python gives it (``surrogateescape`` for bytes that are not UTF-8); those
    bytes come out as ``\\xNN``, which is how restic keeps such names lossless.
    """
    raw = name.encode("utf-8", "surrogateescape")
    if raw.isascii() and _QUOTE_PLAIN.fullmatch(name):
        return name
    out: list[str] = []
    text = raw.decode("utf-8", "surrogateescape")
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in {'"', "\\"}:
            out.append("\\" + ch)
        elif _go_printable(ch):
            out.append(ch)
        elif ch in _QUOTE_SHORT:
            out.append(_QUOTE_SHORT[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def go_unquote(quoted: str) -> str:
    """The inverse of :func:`go_quote` (Go's ``strconv.Unquote`` of ``'"' + quoted + '"'``)."""
    if "\\" not in quoted:
        return quoted
    out = bytearray()
    i = 0
    while i < len(quoted):
        ch = quoted[i]
        if ch != "\\":
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        esc = quoted[i + 1 : i + 2]
        if esc in _UNQUOTE_SHORT:
            out.append(_UNQUOTE_SHORT[esc])
            i += 2
        elif esc == "x":
            out.append(int(quoted[i + 2 : i + 4], 16))
            i += 4
        elif esc in ("u", "U"):
            width = 4 if esc == "u" else 8
            out += chr(int(quoted[i + 2 : i + 2 + width], 16)).encode("utf-8")
            i += 2 + width
        elif esc in "01234567" and esc:
            out.append(int(quoted[i + 1 : i + 4], 8))
            i += 4
        else:
            raise ValueError(f"invalid escape in quoted name {quoted!r}")
    return out.decode("utf-8", "surrogateescape")


def _go_printable(ch: str) -> bool:
    """Go's ``unicode.IsPrint``: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


_QUOTE_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_QUOTE_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_UNQUOTE_SHORT = {
    "a": 7,
    "b": 8,
    "f": 12,
    "n": 10,
    "r": 13,
    "t": 9,
    "v": 11,
    "\\": ord("\\"),
    '"': ord('"'),
    "'": ord("'"),
}


def encode_node(node: Node, *, short_bf: bool = False) -> str:
    """The node's JSON as restic writes it. Remembered on the node (like :meth:`GoTime.to_json`, outside the
    fields) and kept through pickling: a backup's worker processes encode the nodes of the files they read,
    and the parent, which writes every tree, reuses the text instead of encoding 20k nodes itself."""
    if short_bf:
        return _encode_node(node, short_bf=True)
    cached: str | None = node.__dict__.get("_json")
    if cached is None:
        cached = _encode_node(node, short_bf=False)
        object.__setattr__(node, "_json", cached)
    return cached


def _encode_node(node: Node, *, short_bf: bool) -> str:
    def s(text: str) -> str:
        return go_json_string(text, short_bf=short_bf)

    parts = [f'"name":{s(go_quote(node.name))}', f'"type":{s(node.type)}']
    if node.mode:
        parts.append(f'"mode":{node.mode}')
    parts.append(f'"mtime":"{node.mtime.to_json()}"')
    parts.append(f'"atime":"{node.atime.to_json()}"')
    parts.append(f'"ctime":"{node.ctime.to_json()}"')
    parts.append(f'"uid":{node.uid}')
    parts.append(f'"gid":{node.gid}')
    if node.user:
        parts.append(f'"user":{s(node.user)}')
    if node.group:
        parts.append(f'"group":{s(node.group)}')
    for key, number in (("inode", node.inode), ("device_id", node.device_id), ("size", node.size)):
        if number:
            parts.append(f'"{key}":{number}')
    if node.links:
        parts.append(f'"links":{node.links}')
    if node.linktarget:
        parts.append(f'"linktarget":{s(node.linktarget)}')
    if node.extended_attributes:
        attrs = ",".join(
            f'{{"name":{s(a.name)},"value":"{base64.b64encode(a.value).decode()}"}}' for a in node.extended_attributes
        )
        parts.append(f'"extended_attributes":[{attrs}]')
    if node.device:
        parts.append(f'"device":{node.device}')
    if node.content is None:
        parts.append('"content":null')
    else:
        parts.append('"content":[' + ",".join(f'"{blob}"' for blob in node.content) + "]")
    if node.subtree is not None:
        parts.append(f'"subtree":"{node.subtree}"')
    if node.error:
        parts.append(f'"error":{s(node.error)}')
    return "{" + ",".join(parts) + "}"


_FIELDS = (
    "name", "type", "mode", "mtime", "atime", "ctime", "uid", "gid", "user", "group", "inode", "device_id",
    "size", "links", "linktarget", "extended_attributes", "device", "content", "subtree", "error",
)  # fmt: skip
_REQUIRED = frozenset({"name", "type", "mtime", "atime", "ctime", "uid", "gid", "content"})
_OMITTED_WHEN_EMPTY = frozenset(_FIELDS) - _REQUIRED
_NOT_AS_GO = ("<", ">", "&", "\u2028", "\u2029", "\\b", "\\f")
"""Where Python's JSON encoder writes a string differently from Go's (which escapes ``<>&``, U+2028/9 and
writes backspace and form feed as ``\\u0008``/``\\u000c``, not ``\\b``/``\\f``); a false alarm (an
escaped backslash before ``b``) only costs the slow path. Plain ``in`` tests: a regular expression over
the same took longer than encoding the node."""
_canonical_keys: dict[tuple[str, ...], tuple[str, ...] | None] = {}
"""Key order of a node → its ``omitempty`` keys (to check for empty values), None if not restic's order."""


def item_json(item: Mapping[str, Any], raw: str | None = None) -> str | None:
    """A tree node exactly as :func:`encode_node` would write it, straight from the JSON it was read from, or
    None when that cannot be vouched for (keys out of restic's order, an empty ``omitempty`` field, a
    string Python escapes differently). The caller must know its times are Go's canonical text (a parent
    node found unchanged is: :func:`parse_go_text` accepted them). Re-encoding the unchanged nodes of a
    directory that changed otherwise means parsing and formatting every one of them.

    ``raw``: the node's own text in the tree blob it came from (:func:`node_texts`), returned as it is when
    the keys are in restic's order: what a Go encoder wrote is what it would write again, and slicing it
    out of the blob costs a fraction of ``json.dumps``."""
    keys = tuple(item)
    try:
        omitted = _canonical_keys[keys]
    except KeyError:
        positions = [_FIELDS.index(k) if k in _FIELDS else -1 for k in keys]
        canonical = -1 not in positions and positions == sorted(set(positions)) and set(keys) >= _REQUIRED
        omitted = _canonical_keys[keys] = tuple(k for k in keys if k in _OMITTED_WHEN_EMPTY) if canonical else None
    if omitted is None:
        return None
    for key in omitted:
        if not item[key]:
            return None
    if raw is not None:
        return raw
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    for different in _NOT_AS_GO:
        if different in text:
            return None
    try:
        text.encode("utf-8")  # a lone surrogate (a "\\ud800"-style escape) has no UTF-8 form: Go writes U+FFFD
    except UnicodeEncodeError:
        return None
    return text


_NODE_SEPARATOR = '},{"name":'


def node_texts(tree: str, count: int) -> list[str] | None:
    """Each node's JSON as it stands in the (decoded) tree blob ``tree`` of ``count`` nodes, or None when the
    blob is not laid out as restic and :func:`tree_blob` write it (one object per node, ``name`` first, no
    space). A string's own quotes are escaped, so ``},{"name":`` only ever separates two nodes -- or two
    extended attributes, which makes the count come out wrong and the answer None."""
    head, tail = '{"nodes":[{"name":', "}]}\n"
    if not count or not tree.startswith(head) or not tree.endswith(tail):
        return None
    parts = tree[len(head) : -len(tail)].split(_NODE_SEPARATOR)
    if len(parts) != count:
        return None
    return ['{"name":' + part + "}" for part in parts]


def sort_key(node: Node) -> bytes:
    return node.name.encode("utf-8", "surrogateescape")


def encode_tree(nodes: Iterable[Node], *, short_bf: bool = False) -> bytes:
    """The tree blob restic writes for these nodes (sorted by name here, as restic sorts them)."""
    ordered = sorted(nodes, key=sort_key)
    return tree_blob(encode_node(node, short_bf=short_bf) for node in ordered)


def tree_blob(encoded: Iterable[str]) -> bytes:
    """The tree blob of nodes already encoded (:func:`encode_node`), in name order."""
    return ('{"nodes":[' + ",".join(encoded) + "]}\n").encode("utf-8")


def decode_tree(data: bytes) -> list[Node]:
    """The nodes of a tree blob, in stored order. Keys this module does not know are ignored."""
    doc = _loads(data)
    return [node_from_json(item) for item in doc.get("nodes") or []]


def _loads(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "replace"))


def node_from_json(item: Mapping[str, Any]) -> Node:
    get = item.get
    content = get("content")
    attrs = _extended_attributes(get("extended_attributes"))
    mtime_text, atime_text = get("mtime"), get("atime")
    mtime = _time(mtime_text)
    subtree = get("subtree")
    # Node's frozen-dataclass __init__ sets its 20 fields one object.__setattr__ at a time; filling __dict__
    # at once builds the same object several times faster (this runs for every node of every parent tree).
    node: Node = object.__new__(Node)
    node.__dict__.update(
        name=go_unquote(str(get("name", ""))),
        type=str(get("type", "")),
        mode=int(get("mode") or 0),
        mtime=mtime,
        atime=mtime if atime_text == mtime_text else _time(atime_text),  # restic's default: atime = mtime
        ctime=_time(get("ctime")),
        uid=int(get("uid") or 0),
        gid=int(get("gid") or 0),
        user=str(get("user") or ""),
        group=str(get("group") or ""),
        inode=int(get("inode") or 0),
        device_id=int(get("device_id") or 0),
        size=int(get("size") or 0),
        links=int(get("links") or 0),
        linktarget=str(get("linktarget") or ""),
        extended_attributes=attrs,
        device=int(get("device") or 0),
        content=None if content is None else tuple(map(str, content)),
        subtree=None if subtree is None else str(subtree),
        error=str(get("error") or ""),
    )
    return node


class NodeMetadata(NamedTuple):
    """What restoring a node's metadata sets (see :func:`metadata_from_json`)."""

    mode: int
    uid: int
    gid: int
    times_ns: tuple[int, int]
    """(atime, mtime) in nanoseconds since the epoch, as ``os.utime(ns=...)`` takes them."""
    extended_attributes: tuple[ExtendedAttribute, ...]

    @classmethod
    def of(cls, node: Node) -> NodeMetadata:
        return cls(node.mode, node.uid, node.gid, (node.atime.unix_ns, node.mtime.unix_ns), node.extended_attributes)


def metadata_from_json(item: Mapping[str, Any]) -> NodeMetadata:
    """A node's metadata straight from its JSON, as :func:`node_from_json` reads it, without the rest: what a
    restore keeps of each file until its data is in, instead of the whole parsed node."""
    get = item.get
    mtime_text, atime_text = get("mtime"), get("atime")
    mtime = _time(mtime_text).unix_ns
    atime = mtime if atime_text == mtime_text else _time(atime_text).unix_ns
    attrs = _extended_attributes(get("extended_attributes"))
    return NodeMetadata(int(get("mode") or 0), int(get("uid") or 0), int(get("gid") or 0), (atime, mtime), attrs)


def _extended_attributes(raw: Any) -> tuple[ExtendedAttribute, ...]:
    if not raw:
        return ()
    return tuple(ExtendedAttribute(str(a["name"]), base64.b64decode(a.get("value") or "")) for a in raw)


def _time(value: Any) -> GoTime:
    if not value:
        return GoTime(0)
    return GoTime.from_json(str(value))


def go_file_mode(st_mode: int) -> int:
    """Go's ``os.FileMode`` for a Unix ``st_mode`` (``fillFileStatFromSys``), masked as restic masks it."""
    mode = st_mode & MODE_PERM
    fmt = stat_mod.S_IFMT(st_mode)
    if fmt == stat_mod.S_IFBLK:
        mode |= MODE_DEVICE
    elif fmt == stat_mod.S_IFCHR:
        mode |= MODE_DEVICE | MODE_CHAR_DEVICE
    elif fmt == stat_mod.S_IFDIR:
        mode |= MODE_DIR
    elif fmt == stat_mod.S_IFIFO:
        mode |= MODE_NAMED_PIPE
    elif fmt == stat_mod.S_IFLNK:
        mode |= MODE_SYMLINK
    elif fmt == stat_mod.S_IFSOCK:
        mode |= MODE_SOCKET
    if st_mode & stat_mod.S_ISUID:
        mode |= MODE_SETUID
    if st_mode & stat_mod.S_ISGID:
        mode |= MODE_SETGID
    if st_mode & stat_mod.S_ISVTX:
        mode |= MODE_STICKY
    return mode & _RESTIC_MASK


def unix_mode(go_mode: int) -> int:
    """Permission and setuid/setgid/sticky bits of a Go ``os.FileMode`` as Unix ``chmod`` bits."""
    mode = go_mode & MODE_PERM
    if go_mode & MODE_SETUID:
        mode |= stat_mod.S_ISUID
    if go_mode & MODE_SETGID:
        mode |= stat_mod.S_ISGID
    if go_mode & MODE_STICKY:
        mode |= stat_mod.S_ISVTX
    return mode


def node_type(st_mode: int) -> str:
    fmt = stat_mod.S_IFMT(st_mode)
    return {
        stat_mod.S_IFREG: "file",
        stat_mod.S_IFDIR: "dir",
        stat_mod.S_IFLNK: "symlink",
        stat_mod.S_IFBLK: "dev",
        stat_mod.S_IFCHR: "chardev",
        stat_mod.S_IFIFO: "fifo",
        stat_mod.S_IFSOCK: "socket",
    }.get(fmt, "")


@functools.lru_cache(maxsize=256)
def _user_name(uid: int) -> str:
    """Cached: a backup asks for the same few owners once per file (the passwd lookup dominated new files)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@functools.lru_cache(maxsize=256)
def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _xattrs(path: str | os.PathLike[str]) -> tuple[ExtendedAttribute, ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    attrs = []
    for name in names:
        try:
            attrs.append(ExtendedAttribute(name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(attrs)


def node_from_stat(
    path: str | os.PathLike[str],
    st: os.stat_result,
    *,
    content: Sequence[str] | None = None,
    subtree: str | None = None,
    with_atime: bool = False,
    offset: int | None = None,
) -> Node:
    """The node restic 0.14's archiver records for ``path`` (``st`` from ``os.lstat``) on Linux.

    ``content`` (blob ids) is for files and defaults to ``[]`` for them; ``subtree`` for directories.
    ``offset`` fixes the zone offset of the times (seconds east of UTC); by default the local zone's.
    """
    kind = node_type(st.st_mode)

    def when(ns: int) -> GoTime:
        time: GoTime = object.__new__(GoTime)  # as in node_from_json: the frozen __init__ is the slow part
        time.__dict__.update(unix_ns=ns, offset=local_offset(ns // _NS) if offset is None else offset)
        return time

    mtime = when(st.st_mtime_ns)
    size = links = device = 0
    linktarget = ""
    if kind == "file":
        size, links = st.st_size, st.st_nlink
    elif kind == "symlink":
        links, linktarget = st.st_nlink, os.readlink(path)
    elif kind in ("dev", "chardev"):
        links, device = st.st_nlink, st.st_rdev
    node: Node = object.__new__(Node)  # a worker builds one per file it reads: __init__ cost as much as the rest
    node.__dict__.update(
        name=os.path.basename(os.fsdecode(path)),
        type=kind,
        mode=go_file_mode(st.st_mode),
        mtime=mtime,
        atime=when(st.st_atime_ns) if with_atime else mtime,
        ctime=when(st.st_ctime_ns),
        uid=st.st_uid,
        gid=st.st_gid,
        user=_user_name(st.st_uid),
        group=_group_name(st.st_gid),
        inode=st.st_ino,
        device_id=st.st_dev,
        size=size,
        links=links,
        linktarget=linktarget,
        extended_attributes=_xattrs(path),
        device=device,
        content=tuple(content or ()) if kind == "file" else None,
        subtree=subtree if kind == "dir" else None,
        error="",
    )
    return node
