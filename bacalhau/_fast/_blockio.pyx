# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: libraries = crypto
"""Block I/O on the exchange's hot path, compiled: batches of blocks checked against their
SHA-256 digests, and blocks read from a pack straight into the message that sends them.

Twin of ``_blockio_py.py``: same names, identical results. The buffers of a batch are taken
with the GIL held; OpenSSL's SHA256 (which uses the CPU's SHA extensions where there are some)
then runs over all of them without it.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy
from posix.types cimport off_t
from posix.unistd cimport pread

from operator import index as _index

DIGEST_SIZE = 32


cdef extern from "openssl/sha.h" nogil:
    unsigned char* SHA256(const unsigned char* d, size_t n, unsigned char* md)


def first_mismatch(digests, blocks):
    """The index of the first block whose SHA-256 is not its digest, or -1 if every one is.

    `digests`: bytes of 32 each; `blocks`: bytes-like objects (contiguous), as many. Raises
    ValueError if the counts differ or a digest is not 32 bytes, TypeError if a digest is not
    bytes or a block has no buffer."""
    cdef tuple ds = tuple(digests)
    cdef tuple bs = tuple(blocks)
    cdef Py_ssize_t n = len(bs), i, got = 0, bad = -1
    cdef Py_buffer* views
    cdef const char** want
    cdef unsigned char md[32]
    if len(ds) != n:
        raise ValueError(f"{len(ds)} digests for {n} blocks")
    for d in ds:
        if type(d) is not bytes:
            raise TypeError("a digest is bytes")
        if PyBytes_GET_SIZE(d) != 32:
            raise ValueError("a SHA-256 digest is 32 bytes")
    if n == 0:
        return -1
    views = <Py_buffer*>malloc(n * sizeof(Py_buffer))
    want = <const char**>malloc(n * sizeof(char*))
    if views == NULL or want == NULL:
        free(views)
        free(want)
        raise MemoryError()
    try:
        for i in range(n):
            PyObject_GetBuffer(bs[i], &views[i], PyBUF_SIMPLE)
            got += 1
            want[i] = PyBytes_AS_STRING(ds[i])
        with nogil:
            for i in range(n):
                SHA256(<const unsigned char*>views[i].buf, <size_t>views[i].len, md)
                if memcmp(md, want[i], 32) != 0:
                    bad = i
                    break
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        free(views)
        free(want)
    return bad


def pread_many(bytes head not None, reads):
    """`head` followed by what each of `reads` ((fd, offset, length): that many bytes of the
    file at that offset) reads, one after another, as one new bytes object that the files are
    read straight into; None if a file ends before a read is complete. Raises OSError,
    ValueError for a negative offset or length, TypeError for a read that is not three ints."""
    cdef list rs = []
    cdef Py_ssize_t h = PyBytes_GET_SIZE(head), total = h, got, pos
    cdef ssize_t n
    cdef int fd
    cdef off_t offset
    cdef Py_ssize_t length
    for r in reads:
        fd, offset, length = [_index(x) for x in r]
        if length < 0 or offset < 0:
            raise ValueError("a negative length or offset")
        if length > PY_SSIZE_T_MAX - total:
            raise ValueError("reads too large")
        total += length
        rs.append((fd, offset, length))
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(head), h)
    pos = h
    for fd, offset, length in rs:
        got = 0
        while got < length:
            with nogil:
                n = pread(fd, p + pos + got, <size_t>(length - got), offset + got)
            if n < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                PyErr_SetFromErrno(OSError)
                return None  # not reached: the error is raised
            if n == 0:
                return None
            got += n
        pos += length
    return out
