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
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy
from posix.types cimport off_t
from posix.unistd cimport pread

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


def pread_after(int fd, bytes head not None, Py_ssize_t length, off_t offset):
    """`head` followed by `length` bytes of the file `fd` at `offset`, as one new bytes object
    the file is read straight into (shorter if the file ends first). Raises OSError, or
    ValueError for a negative length or offset."""
    if length < 0 or offset < 0:
        raise ValueError("a negative length or offset")
    cdef Py_ssize_t h = PyBytes_GET_SIZE(head), got = 0
    cdef ssize_t n
    out = PyBytes_FromStringAndSize(NULL, h + length)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(head), h)
    while got < length:
        with nogil:
            n = pread(fd, p + h + got, <size_t>(length - got), offset + got)
        if n < 0:
            if errno == EINTR:
                PyErr_CheckSignals()
                continue
            PyErr_SetFromErrno(OSError)
            return None  # not reached: the error is raised
        if n == 0:
            return out[: h + got]
        got += n
    return out
