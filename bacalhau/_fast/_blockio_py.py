"""Block I/O on the exchange's hot path, in pure Python: batches of blocks checked against
their SHA-256 digests, and blocks read from a pack into the message that sends them.

Twin of ``_blockio.pyx``: same names, identical results (hashlib releases the GIL while it
hashes a block of 2 KiB or more).
"""

from __future__ import annotations

import hashlib
import operator
import os
from collections.abc import Iterable
from typing import Any

DIGEST_SIZE = 32


def first_mismatch(digests: Iterable[bytes], blocks: Iterable[Any]) -> int:
    """The index of the first block whose SHA-256 is not its digest, or -1 if every one is.

    `digests`: bytes of 32 each; `blocks`: bytes-like objects (contiguous), as many. Raises
    ValueError if the counts differ or a digest is not 32 bytes, TypeError if a digest is not
    bytes or a block has no buffer."""
    ds = tuple(digests)
    bs = tuple(blocks)
    if len(ds) != len(bs):
        raise ValueError(f"{len(ds)} digests for {len(bs)} blocks")
    for d in ds:
        if type(d) is not bytes:
            raise TypeError("a digest is bytes")
        if len(d) != 32:
            raise ValueError("a SHA-256 digest is 32 bytes")
    for b in bs:  # as the compiled twin takes every buffer before it hashes any
        with memoryview(b) as view:
            if not view.contiguous:
                raise BufferError("a block's buffer is not contiguous")
    sha256 = hashlib.sha256
    for i, (d, b) in enumerate(zip(ds, bs, strict=True)):
        if sha256(b).digest() != d:
            return i
    return -1


def pread_many(head: bytes, reads: Iterable[tuple[int, int, int]]) -> bytes | None:
    """`head` followed by what each of `reads` ((fd, offset, length): that many bytes of the
    file at that offset) reads, one after another, as one new bytes object; None if a file
    ends before a read is complete. Raises OSError, ValueError for a negative offset or length,
    TypeError for a read that is not three ints."""
    if type(head) is not bytes:
        raise TypeError("head is bytes")
    rs = []
    for r in reads:
        fd, offset, length = (operator.index(x) for x in r)
        if length < 0 or offset < 0:
            raise ValueError("a negative length or offset")
        rs.append((fd, offset, length))
    parts = [head]
    for fd, offset, length in rs:
        got = 0
        while got < length:
            chunk = os.pread(fd, length - got, offset + got)
            if not chunk:
                return None
            parts.append(chunk)
            got += len(chunk)
    return b"".join(parts)
