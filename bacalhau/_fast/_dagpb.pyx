# cython: language_level=3, boundscheck=False, wraparound=False
"""dag-pb and UnixFS node encoding and the balanced DAG layout, compiled.

Twin of ``_dagpb_py.py``: same names, byte-identical results. Nodes are encoded by sizing
them first and then writing varints straight into one new bytes object.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

import hashlib

MAX_LINKS = 174

T_RAW = 0
T_DIRECTORY = 1
T_FILE = 2
T_METADATA = 3
T_SYMLINK = 4
T_HAMT_SHARD = 5

cdef bytes _SHA256_PREFIX = b"\x12\x20"
_sha256 = hashlib.sha256


class DecodeError(ValueError):
    """The bytes are not a well-formed dag-pb node or UnixFS message."""


cdef inline Py_ssize_t _vlen(uint64_t n) noexcept nogil:
    cdef Py_ssize_t k = 1
    while n >= 0x80:
        n >>= 7
        k += 1
    return k


cdef inline char* _put(char* p, uint64_t n) noexcept nogil:
    while n >= 0x80:
        p[0] = <char>((n & 0x7F) | 0x80)
        p += 1
        n >>= 7
    p[0] = <char>n
    return p + 1


cdef inline char* _put_bytes(char* p, bytes b):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(p, PyBytes_AS_STRING(b), n)
    return p + n


def varint(n):
    """Unsigned LEB128 varint of ``n`` (as protobuf and multiformats use)."""
    if n < 0:
        raise ValueError("varint of a negative number")
    if n >= (1 << 64):
        # Beyond 64 bits: rare, so the generic path is fine.
        out = bytearray()
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)
    cdef uint64_t v = n
    cdef bytes out_b = PyBytes_FromStringAndSize(NULL, _vlen(v))
    _put(PyBytes_AS_STRING(out_b), v)
    return out_b


def read_varint(const unsigned char[:] buf, Py_ssize_t pos):
    """Decode a varint at ``pos``; returns (value, next position). Raises DecodeError."""
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef Py_ssize_t end = buf.shape[0]
    cdef unsigned char b
    if pos < 0:  # indexing is unchecked here: never read before the buffer
        raise DecodeError("negative position")
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise DecodeError("varint longer than 64 bits")
        result |= (<uint64_t>(b & 0x7F)) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def leaf_envelope(uint64_t size):
    """Bytes before and after ``size`` chunk bytes that make a CIDv0 UnixFS file leaf."""
    cdef bytes prefix, suffix
    cdef char* p
    cdef Py_ssize_t vs, inner
    if size == 0:
        return b"\x0a\x04\x08\x02\x18\x00", b""
    vs = _vlen(size)
    inner = 2 + 1 + vs + <Py_ssize_t>size + 1 + vs
    prefix = PyBytes_FromStringAndSize(NULL, 1 + _vlen(inner) + 3 + vs)
    p = PyBytes_AS_STRING(prefix)
    p[0] = 0x0A
    p = _put(p + 1, inner)
    p[0] = 0x08
    p[1] = 0x02
    p[2] = 0x12
    _put(p + 3, size)
    suffix = PyBytes_FromStringAndSize(NULL, 1 + vs)
    p = PyBytes_AS_STRING(suffix)
    p[0] = 0x18
    _put(p + 1, size)
    return prefix, suffix


cdef inline Py_ssize_t _link_body_len(Py_ssize_t cid_len, Py_ssize_t name_len, uint64_t tsize) noexcept:
    return 1 + _vlen(cid_len) + cid_len + 1 + _vlen(name_len) + name_len + 1 + _vlen(tsize)


cdef inline char* _put_link(char* p, bytes cid, bytes name, uint64_t tsize, Py_ssize_t body):
    p[0] = 0x12
    p = _put(p + 1, body)
    p[0] = 0x0A
    p = _put(p + 1, PyBytes_GET_SIZE(cid))
    p = _put_bytes(p, cid)
    p[0] = 0x12
    p = _put(p + 1, PyBytes_GET_SIZE(name))
    p = _put_bytes(p, name)
    p[0] = 0x18
    return _put(p + 1, tsize)


def file_node(links):
    """Internal UnixFS file node over children given as (cid, tsize, filesize)."""
    cdef Py_ssize_t total = 0, body, unixfs_len
    cdef uint64_t filesize = 0, fs
    cdef bytes cid, out
    cdef char* p
    for cid, tsize, fs in links:
        body = _link_body_len(PyBytes_GET_SIZE(cid), 0, tsize)
        total += 1 + _vlen(body) + body
        filesize += fs
    unixfs_len = 2 + 1 + _vlen(filesize)
    for _, _, fs in links:
        unixfs_len += 1 + _vlen(fs)
    total += 1 + _vlen(unixfs_len) + unixfs_len
    out = PyBytes_FromStringAndSize(NULL, total)
    p = PyBytes_AS_STRING(out)
    for cid, tsize, _ in links:
        body = _link_body_len(PyBytes_GET_SIZE(cid), 0, tsize)
        p = _put_link(p, cid, b"", tsize, body)
    p[0] = 0x0A
    p = _put(p + 1, unixfs_len)
    p[0] = 0x08
    p[1] = 0x02
    p[2] = 0x18
    p = _put(p + 3, filesize)
    for _, _, fs in links:
        p[0] = 0x20
        p = _put(p + 1, fs)
    return out


def dir_node(entries):
    """UnixFS directory node over (name, cid, tsize) entries, in the order given."""
    cdef Py_ssize_t total = 4, body
    cdef bytes name, cid, out
    cdef char* p
    for name, cid, tsize in entries:
        body = _link_body_len(PyBytes_GET_SIZE(cid), PyBytes_GET_SIZE(name), tsize)
        total += 1 + _vlen(body) + body
    out = PyBytes_FromStringAndSize(NULL, total)
    p = PyBytes_AS_STRING(out)
    for name, cid, tsize in entries:
        body = _link_body_len(PyBytes_GET_SIZE(cid), PyBytes_GET_SIZE(name), tsize)
        p = _put_link(p, cid, name, tsize, body)
    memcpy(p, b"\x0a\x02\x08\x01", 4)
    return out


def symlink_node(bytes target):
    """UnixFS symlink node pointing at ``target``."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(target)
    cdef Py_ssize_t inner = 2 + 1 + _vlen(n) + n
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 1 + _vlen(inner) + inner)
    cdef char* p = PyBytes_AS_STRING(out)
    p[0] = 0x0A
    p = _put(p + 1, inner)
    p[0] = 0x08
    p[1] = 0x04
    p[2] = 0x12
    p = _put(p + 3, n)
    _put_bytes(p, target)
    return out


cdef inline Py_ssize_t _rv(const unsigned char[:] buf, Py_ssize_t pos, Py_ssize_t end, uint64_t* out) except -1:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char b
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        # The tenth byte may add only the 64th bit: anything more overflows 64 bits.
        if shift == 63 and b > 1:
            raise DecodeError("varint longer than 64 bits")
        result |= (<uint64_t>(b & 0x7F)) << shift
        if not b & 0x80:
            out[0] = result
            return pos
        shift += 7


cdef inline Py_ssize_t _ld(const unsigned char[:] buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t* start) except -1:
    cdef uint64_t n
    pos = _rv(buf, pos, end, &n)
    if n > <uint64_t>(end - pos):
        raise DecodeError("truncated field")
    start[0] = pos
    return pos + <Py_ssize_t>n


cdef Py_ssize_t _skip(const unsigned char[:] buf, Py_ssize_t pos, Py_ssize_t end, uint64_t wire) except -1:
    cdef uint64_t v
    cdef Py_ssize_t s
    if wire == 0:
        return _rv(buf, pos, end, &v)
    if wire == 2:
        return _ld(buf, pos, end, &s)
    if wire == 1 or wire == 5:
        s = pos + (8 if wire == 1 else 4)
        if s > end:
            raise DecodeError("truncated field")
        return s
    raise DecodeError(f"unsupported protobuf wire type {wire}")


def decode_node(block):
    """Decode a dag-pb node into ([(cid, name, tsize)], data). Raises DecodeError."""
    cdef const unsigned char[:] buf = block
    cdef Py_ssize_t pos = 0, end = buf.shape[0], s, e, lp, ls, lp2
    cdef uint64_t key, field, wire, tsize
    cdef list links = []
    data = None
    while pos < end:
        pos = _rv(buf, pos, end, &key)
        field = key >> 3
        wire = key & 7
        if field == 1 and wire == 2:
            e = _ld(buf, pos, end, &s)
            data = bytes(buf[s:e])
            pos = e
        elif field == 2 and wire == 2:
            e = _ld(buf, pos, end, &s)
            cid = b""
            name = b""
            tsize = 0
            lp = s
            while lp < e:
                lp = _rv(buf, lp, e, &key)
                field = key >> 3
                wire = key & 7
                if field == 1 and wire == 2:
                    lp2 = _ld(buf, lp, e, &ls)
                    cid = bytes(buf[ls:lp2])
                    lp = lp2
                elif field == 2 and wire == 2:
                    lp2 = _ld(buf, lp, e, &ls)
                    name = bytes(buf[ls:lp2])
                    lp = lp2
                elif field == 3 and wire == 0:
                    lp = _rv(buf, lp, e, &tsize)
                else:
                    raise DecodeError(f"unexpected field {field} (wire type {wire}) in dag-pb link")
            if not cid:
                raise DecodeError("dag-pb link without a Hash")
            links.append((cid, name, tsize))
            pos = e
        else:
            raise DecodeError(f"unexpected field {field} (wire type {wire}) in dag-pb node")
    return links, data


def decode_unixfs(data):
    """Decode a UnixFS Data message into (type, data, filesize, blocksizes)."""
    cdef const unsigned char[:] buf = data
    cdef Py_ssize_t pos = 0, end = buf.shape[0], s, e, p
    cdef uint64_t key, field, wire, v
    cdef uint64_t utype = 0
    cdef bint typed = False
    cdef list blocksizes = []
    payload = None
    filesize = None
    while pos < end:
        pos = _rv(buf, pos, end, &key)
        field = key >> 3
        wire = key & 7
        if field == 1 and wire == 0:
            pos = _rv(buf, pos, end, &utype)
            typed = True
        elif field == 2 and wire == 2:
            e = _ld(buf, pos, end, &s)
            payload = bytes(buf[s:e])
            pos = e
        elif field == 3 and wire == 0:
            pos = _rv(buf, pos, end, &v)
            filesize = v
        elif field == 4 and wire == 0:
            pos = _rv(buf, pos, end, &v)
            blocksizes.append(v)
        elif field == 4 and wire == 2:
            e = _ld(buf, pos, end, &s)
            p = s
            while p < e:
                p = _rv(buf, p, e, &v)
                blocksizes.append(v)
            pos = e
        else:
            pos = _skip(buf, pos, end, wire)
    if not typed:
        raise DecodeError("UnixFS message without a Type")
    return utype, payload, filesize, blocksizes


cdef class BalancedLayout:
    """Builds kubo's balanced file DAG from leaves fed in order, in constant memory.

    Each level holds at most ``max_links`` pending nodes; a full level is closed into one
    node of the level above. ``finish`` closes the partial levels so that the right-most
    subtree keeps the full height of the tree, as go-unixfs does.
    """

    cdef bytes _prefix
    cdef object _sink
    cdef Py_ssize_t _max
    cdef list _levels

    def __init__(self, bytes cid_prefix, sink, Py_ssize_t max_links=MAX_LINKS):
        if max_links < 2:
            raise ValueError("max_links must be at least 2")
        self._prefix = cid_prefix + _SHA256_PREFIX
        self._sink = sink
        self._max = max_links
        self._levels = [[]]

    def add(self, bytes cid, tsize, filesize):
        """Append the next leaf, given by its CID bytes, Tsize and file bytes."""
        cdef Py_ssize_t level = 0
        (<list>self._levels[0]).append((cid, tsize, filesize))
        while len(<list>self._levels[level]) >= self._max:
            self._close(level)
            level += 1

    cdef _close(self, Py_ssize_t level):
        cdef list children = self._levels[level]
        cdef bytes block = file_node(children)
        cdef bytes cid = self._prefix + _sha256(block).digest()
        cdef uint64_t tsize = PyBytes_GET_SIZE(block), filesize = 0
        for _, t, f in children:
            tsize += <uint64_t>t
            filesize += <uint64_t>f
        if self._sink is not None:
            self._sink(cid, block)
        self._levels[level] = []
        if level + 1 == len(self._levels):
            self._levels.append([])
        (<list>self._levels[level + 1]).append((cid, tsize, filesize))

    def finish(self):
        """Close all levels and return the root as (cid, tsize, filesize)."""
        cdef Py_ssize_t top = len(self._levels) - 1, level
        for level in range(top):
            if self._levels[level]:
                self._close(level)
        if not self._levels[top]:
            raise ValueError("no leaves were added")
        if len(<list>self._levels[top]) > 1:
            self._close(top)
            top += 1
        return self._levels[top][0]
