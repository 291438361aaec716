"""Properties of the restic tree encoding (no restic binary needed; see test_native_write.py for the oracle)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from kubestash.engine.native.tree import (
    MODE_DIR,
    MODE_SETUID,
    MODE_SYMLINK,
    ExtendedAttribute,
    GoTime,
    Node,
    NodeMetadata,
    decode_tree,
    encode_node,
    encode_tree,
    go_file_mode,
    go_json_string,
    go_quote,
    go_unquote,
    metadata_from_json,
    node_from_json,
    node_from_stat,
    unix_mode,
)

# A tree blob restic 0.14 (go1.19) wrote for a directory with an empty file named 'e f é 日本 <>&"\\',
# an empty dir, a symlink and files with modes 0o644 / 0o600; its id is the SHA-256 of these bytes.
RESTIC_TREE_ID = "aa8f2736459d5958afd948c93953340c051b7ee4db15c325a54390d240ce2ca1"
RESTIC_TREE = (
    b'{"nodes":[{"name":"a.txt","type":"file","mode":420,"mtime":"2023-11-14T2'
    b'2:13:20Z","atime":"2023-11-14T22:13:20Z","ctime":"2026-11-26T02:37:37.71'
    b'9495645Z","uid":0,"gid":0,"user":"root","group":"root","inode":2237865,"'
    b'device_id":65024,"size":6,"links":1,"content":["5891b5b522d5df086d0ff0b1'
    b'10fbd9d21bb4fc7163af34d08286a2e846f6be03"]},{"name":"e f \xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \\u003'
    b'c\\u003e\\u0026\\\\\\"\\\\\\\\","type":"file","mode":420,"mtime":"2026-11-26T02:3'
    b'7:37.720054487Z","atime":"2026-11-26T02:37:37.720054487Z","ctime":"2026-'
    b'11-26T02:37:37.720054487Z","uid":0,"gid":0,"user":"root","group":"root",'
    b'"inode":2237871,"device_id":65024,"links":1,"content":[]},{"name":"empty'
    b'","type":"dir","mode":2147484141,"mtime":"2023-11-14T22:13:21.000000123Z'
    b'","atime":"2023-11-14T22:13:21.000000123Z","ctime":"2026-11-26T02:37:37.'
    b'719495645Z","uid":0,"gid":0,"user":"root","group":"root","inode":2237864'
    b',"device_id":65024,"content":null,"subtree":"ac08ce34ba4f8123618661bef24'
    b'25f7028ffb9ac740578a3ee88684d2523fee8"},{"name":"link","type":"symlink",'
    b'"mode":134218239,"mtime":"2026-11-26T02:37:37.719495645Z","atime":"2026-'
    b'11-26T02:37:37.719495645Z","ctime":"2026-11-26T02:37:37.719495645Z","uid'
    b'":0,"gid":0,"user":"root","group":"root","inode":2237870,"device_id":650'
    b'24,"links":1,"linktarget":"sub/b.bin","content":null},{"name":"scratch.t'
    b'mp","type":"file","mode":420,"mtime":"2023-11-14T22:13:22.000000246Z","a'
    b'time":"2023-11-14T22:13:22.000000246Z","ctime":"2026-11-26T02:37:37.7200'
    b'54487Z","uid":0,"gid":0,"user":"root","group":"root","inode":2237869,"de'
    b'vice_id":65024,"size":8,"links":1,"content":["cfa5ad96f5be4fc290f591b8af'
    b'd957551315abbb0a68cdf7660849d8829d644f"]},{"name":"secret.key","type":"f'
    b'ile","mode":384,"mtime":"2023-11-14T22:13:23.000000369Z","atime":"2023-1'
    b'1-14T22:13:23.000000369Z","ctime":"2026-11-26T02:37:37.720054487Z","uid"'
    b':0,"gid":0,"user":"root","group":"root","inode":2237868,"device_id":6502'
    b'4,"size":1,"links":1,"content":["8254c329a92850f6d539dd376f4816ee2764517'
    b'da5e0235514af433164480d7a"]},{"name":"sub","type":"dir","mode":214748414'
    b'1,"mtime":"2026-11-26T02:37:37.720054487Z","atime":"2026-11-26T02:37:37.'
    b'720054487Z","ctime":"2026-11-26T02:37:37.720054487Z","uid":0,"gid":0,"us'
    b'er":"root","group":"root","inode":2237862,"device_id":65024,"content":nu'
    b'll,"subtree":"ed89d02efbe74c9fe0bba9aa12e576db4df707739c7c745ec458621ab3'
    b'c573fd"}]}\n'
)


def test_restic_fixture_reencodes_byte_for_byte() -> None:
    assert hashlib.sha256(RESTIC_TREE).hexdigest() == RESTIC_TREE_ID
    nodes = decode_tree(RESTIC_TREE)
    assert [n.name for n in nodes] == [
        "a.txt",
        'e f é 日本 <>&"\\',
        "empty",
        "link",
        "scratch.tmp",
        "secret.key",
        "sub",
    ]
    empty_file = nodes[1]
    assert empty_file.content == () and empty_file.size == 0
    assert nodes[2].content is None and nodes[2].mode == MODE_DIR | 0o755
    assert nodes[3].mode == MODE_SYMLINK | 0o777 and nodes[3].linktarget == "sub/b.bin"
    assert nodes[2].mtime == GoTime(1_700_000_001_000_000_123)
    assert encode_tree(nodes) == RESTIC_TREE
    assert encode_tree(reversed(nodes)) == RESTIC_TREE


def _reference_escape(text: str) -> str:
    """Go's HTML-safe escaping expressed through Python's json, one character at a time."""
    out = []
    for ch in text:
        if ch in "<>&\u2028\u2029\b\f":
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(json.dumps(ch, ensure_ascii=False)[1:-1])
    return '"' + "".join(out) + '"'


names = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)
any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@given(st.text(alphabet=st.characters(), max_size=40))
def test_escaping_matches_go(text: str) -> None:
    encoded = go_json_string(text)
    assert encoded == _reference_escape(text)
    # Go cannot hold a lone surrogate in a string: it becomes U+FFFD; everything else round-trips.
    assert json.loads(encoded) == "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    for raw in "<>&\u2028\u2029":
        assert raw not in encoded
    assert all(ord(ch) >= 0x20 for ch in encoded)


@given(st.binary(max_size=20))
def test_invalid_utf8_becomes_one_replacement_per_byte(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    decoded = json.loads(go_json_string(text))
    assert decoded == "".join("\ufffd" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in text)


@given(st.binary(max_size=30))
def test_names_are_quoted_losslessly(raw: bytes) -> None:
    name = raw.decode("utf-8", "surrogateescape")
    quoted = go_quote(name)
    assert go_unquote(quoted) == name
    assert decode_tree(encode_tree([Node(name, "file")]))[0].name == name
    assert all(ord(ch) >= 0x20 and ord(ch) != 0x7F and not 0xD800 <= ord(ch) <= 0xDFFF for ch in quoted)


@given(st.text(max_size=30))
def test_quote_is_identity_on_printable_text(text: str) -> None:
    printable = "".join(ch for ch in text if ch == " " or (unicodedata.category(ch)[0] in "LMNPS" and ch not in '"\\'))
    assert go_quote(printable) == printable


def test_quote_table() -> None:
    assert go_quote('odd <>&"\\ name') == 'odd <>&\\"\\\\ name'
    assert go_quote("a\x00\x07\n\x7f\u00a0\u00ad\U0001f600\U000e0001") == (
        "a\\x00\\a\\n\\x7f\\u00a0\\u00ad\U0001f600\\U000e0001"
    )
    assert go_quote(b"\xff\xed\xa0\x80".decode("utf-8", "surrogateescape")) == "\\xff\\xed\\xa0\\x80"
    assert go_unquote("\\101\\u00e9\\'") == "Aé'"


def test_escaping_table() -> None:
    assert go_json_string('a<b>&"\\\n\r\t\b\f\x00\x1f\x7f\u2028é') == (
        '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\r\\t\\u0008\\u000c\\u0000\\u001f\x7f\\u2028é"'
    )
    assert go_json_string("\b\f", short_bf=True) == '"\\b\\f"'


go_times = st.builds(
    GoTime,
    st.integers(min_value=-62135596800 * 10**9 + 14 * 3600 * 10**9, max_value=253402300799 * 10**9 - 14 * 3600 * 10**9),
    st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: m * 60),
)


@given(go_times)
def test_time_round_trip(t: GoTime) -> None:
    text = t.to_json()
    assert GoTime.from_json(text) == t
    assert not text.endswith("0Z") or "." not in text  # trailing zeros trimmed


@given(go_times, st.sampled_from(["", "0", "00", "+00:00", "z", "t", "-00:00", ".", " "]), st.integers(0, 30))
def test_fast_time_parsing_agrees_with_the_general_parser(t: GoTime, mangle: str, at: int) -> None:
    """Go's own text takes a slicing fast path; any other text must parse (or fail) exactly as before."""
    from kubestash.engine.native import tree as tree_module

    text = t.to_json()
    variants = [text, text[:at] + mangle + text[at:], text.replace("Z", mangle), text.replace("T", mangle, 1)]
    for variant in variants:
        fast = tree_module.parse_go_text(variant)
        try:
            general: GoTime | None = GoTime.parse(variant)
        except ValueError:
            general = None
        if fast is not None:
            assert fast == general, variant
            assert fast.to_json() == variant  # only canonical text takes the fast path


def test_time_table() -> None:
    assert GoTime(1_700_000_000 * 10**9).to_json() == "2023-11-14T22:13:20Z"
    assert GoTime(1_700_000_001_000_000_123).to_json() == "2023-11-14T22:13:21.000000123Z"
    assert GoTime(1_700_000_000_500_000_000, 7200).to_json() == "2023-11-15T00:13:20.5+02:00"
    assert GoTime(-1, -5 * 3600 - 1800).to_json() == "1969-12-31T18:29:59.999999999-05:30"
    assert GoTime(-62135596800 * 10**9).to_json() == "0001-01-01T00:00:00Z"


hex_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
counts = st.integers(min_value=0, max_value=2**64 - 1)
nodes = st.builds(
    Node,
    name=names,
    type=st.sampled_from(["file", "dir", "symlink", "dev", "chardev", "fifo", "socket"]),
    mode=st.integers(min_value=0, max_value=2**32 - 1),
    mtime=go_times,
    atime=go_times,
    ctime=go_times,
    uid=st.integers(min_value=0, max_value=2**32 - 1),
    gid=st.integers(min_value=0, max_value=2**32 - 1),
    user=any_text,
    group=any_text,
    inode=counts,
    device_id=counts,
    size=counts,
    links=counts,
    linktarget=any_text,
    extended_attributes=st.lists(st.builds(ExtendedAttribute, names, st.binary(max_size=20)), max_size=2).map(tuple),
    device=counts,
    content=st.none() | st.lists(hex_ids, max_size=3).map(tuple),
    subtree=st.none() | hex_ids,
    error=any_text,
)


@given(st.lists(nodes, max_size=6, unique_by=lambda n: n.name))
def test_encode_decode_round_trip(items: list[Node]) -> None:
    blob = encode_tree(items)
    assert blob.endswith(b"]}\n") and blob.startswith(b'{"nodes":[')
    decoded = decode_tree(blob)
    assert decoded == sorted(items, key=lambda n: n.name.encode())
    assert encode_tree(decoded) == blob
    assert json.loads(blob)["nodes"] == [json.loads(encode_tree([n])[10:-3]) for n in decoded]


@given(nodes)
def test_a_nodes_json_is_reused_only_when_it_is_what_encoding_gives(node: Node) -> None:
    """An unchanged parent node's JSON goes into the new tree as it was read (no parse, no re-encoding), but
    only when that is byte for byte what encoding the node gives; otherwise the caller encodes it."""
    from kubestash.engine.native.tree import encode_node, item_json

    text = encode_node(node)
    reused = item_json(json.loads(text))
    assert reused is None or reused == text
    if node.name.isalnum() and node.user.isalnum() and node.group.isalnum() and not node.linktarget:
        plain = Node(node.name, "file", mode=0o644, mtime=node.mtime, atime=node.mtime, ctime=node.ctime, size=1)
        assert item_json(json.loads(encode_node(plain))) == encode_node(plain)


@given(nodes)
def test_a_nodes_metadata_reads_as_its_whole_node_does(node: Node) -> None:
    """A restore keeps only each file's metadata (not its parsed node): read straight from the JSON, it must be
    what the full node says (restic's atime-equals-mtime shortcut included)."""
    item = json.loads(encode_node(node))
    assert metadata_from_json(item) == NodeMetadata.of(node_from_json(item))
    assert metadata_from_json(item).times_ns == (node.atime.unix_ns, node.mtime.unix_ns)


@given(st.lists(nodes, max_size=6, unique_by=lambda n: n.name))
def test_node_texts_cut_each_nodes_json_out_of_its_tree(items: list[Node]) -> None:
    """A changed directory's unchanged nodes go into its new tree as their text in the parent's blob: the cut
    must give exactly each node's encoding, or refuse (no nodes; two extended attributes look like two nodes)."""
    from kubestash.engine.native.tree import encode_node, node_texts, sort_key

    blob = encode_tree(items).decode()
    texts = node_texts(blob, len(items))
    if texts is None:
        assert not items or any(len(n.extended_attributes) > 1 for n in items)
    else:
        assert texts == [encode_node(n) for n in sorted(items, key=sort_key)]
        assert node_texts(blob, len(items) + 1) is None
    assert node_texts(blob.rstrip("\n"), len(items)) is None


@given(
    st.lists(nodes, max_size=6, unique_by=lambda n: n.name).flatmap(
        lambda xs: st.tuples(st.just(xs), st.permutations(xs))
    )
)
def test_order_of_input_does_not_matter(pair: tuple[list[Node], list[Node]]) -> None:
    items, shuffled = pair
    assert encode_tree(shuffled) == encode_tree(items)


def test_empty_tree() -> None:
    assert encode_tree([]) == b'{"nodes":[]}\n'
    assert decode_tree(b'{"nodes":[]}\n') == []


def test_go_file_modes() -> None:
    assert go_file_mode(stat.S_IFDIR | 0o755) == 2147484141
    assert go_file_mode(stat.S_IFLNK | 0o777) == 134218239
    assert go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == MODE_SETUID | 0o755
    assert unix_mode(go_file_mode(stat.S_IFREG | stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | 0o751)) == 0o7751


def test_node_from_stat(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to("f")
    os.utime(tmp_path / "f", ns=(5, 1_700_000_000_000_000_001))
    f = node_from_stat(tmp_path / "f", (tmp_path / "f").lstat(), content=["00" * 32], offset=0)
    assert (f.type, f.size, f.links, f.content, f.atime, f.mtime) == (
        "file",
        3,
        1,
        ("00" * 32,),
        GoTime(1_700_000_000_000_000_001),
        GoTime(1_700_000_000_000_000_001),
    )
    d = node_from_stat(tmp_path / "d", (tmp_path / "d").lstat(), subtree="11" * 32)
    assert (d.type, d.size, d.links, d.content, d.subtree) == ("dir", 0, 0, None, "11" * 32)
    link = node_from_stat(tmp_path / "l", (tmp_path / "l").lstat())
    assert (link.type, link.linktarget, link.content, link.links) == ("symlink", "f", None, 1)
