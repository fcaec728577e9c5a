# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled WebSocket core: the Cython twin of ``_frames_py``.

Same API, same events, same failure reasons as ``_frames_py`` for every
input, every split of the input and both roles (``FrameParser(masked=True)``
reads masked client frames, as a server; ``masked=False`` unmasked server
frames, as a client; see ``_frames_py``); ``tests/test_core_differential.py``
holds the two together. What differs is how the work is done (the C
kernels, unmasking, UTF-8 and frame headers, are in ``_kernels.h``, which
``fuzz/kernels_fuzz.c`` fuzzes on its own):

- payloads are unmasked 8 bytes at a time (a 64-bit mask word rotated for
  the current mask offset, loads and stores through ``memcpy`` so any
  alignment is fine), in place when the caller's buffer is writable and the
  payload is then read from it, else while copying into the destination;
  in the client role there is nothing to unmask: the key stays all zeros
  (so every kernel call is still right) and the plain copies are
  ``memcpy``, chosen once per payload piece, never per byte;
- UTF-8 is checked by an incremental shift-DFA in C whose state survives
  across frames and ``feed`` calls, with an ASCII fast path; it rejects at
  the very byte where the pure twin's incremental decoder (plus
  ``utf8_partial_ok``) rejects;
- a message whose single frame is complete in one ``feed`` call is built
  straight from the input buffer; a first-and-final frame split across
  calls goes into a result object preallocated at its exact size (for
  large text a ``str``, filled in place while the text is all ASCII);
  other messages go into one C buffer with geometric growth, copied once
  at the end and freed at once, so an idle parser holds no buffer at all:
  a large buffer becomes the process's one spare instead, reused by the
  next large message (no page faults) and freed by ``trim_spare``;
- large non-ASCII text is decoded by a kernel of its own straight into a
  ``str`` of its final size and kind (the DFA validated it already), and
  the UTF-8 it came from is kept with it, so that ``utf8_payload`` (the
  server's send of a large ``str``) finds it instead of encoding again;
- in stream mode (``stream=True``, see ``_frames_py``) ``feed`` takes a
  loop of its own (``_run_stream``), chosen once per call, so the checks
  of that mode cost the default mode nothing: each piece of data payload
  is unmasked straight into its ``bytes`` object, which is then validated
  if it is text; there is no message buffer at all.

Bytes-like arguments of the ordinary types (``bytes``, ``bytearray``,
``str``, contiguous byte ``memoryview``) take the compiled paths. Anything
unusual (subclasses, other exporters, non-contiguous views, odd mask or
offset types) is handed to the pure twin, so its exceptions and results are
identical by construction.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_ND,
    PyBUF_RECORDS_RO,
    PyBUF_SIMPLE,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
)
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.string cimport memcpy, memset, strcmp

from ._common import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    DEFAULT_MAX_MESSAGE_SIZE,
    FAIL,
    FRAGMENT,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_BINARY_DEFLATED,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OP_TEXT_DEFLATED,
    R_BAD_UTF8,
    R_CONT_UNEXPECTED,
    R_CTL_FRAGMENTED,
    R_CTL_TOO_LONG,
    R_DATA_UNEXPECTED,
    R_LENGTH_MSB,
    R_MASKED,
    R_NON_MINIMAL,
    R_OPCODE,
    R_RSV,
    R_TOO_BIG,
    R_UNMASKED,
    parse_close_payload,
)

__all__ = [
    "FrameParser",
    "append_frame",
    "apply_mask",
    "encode_frame",
    "mask_inplace",
    "trim_spare",
    "utf8_payload",
    "validate_utf8",
]


cdef extern from "Python.h":
    # Declared here (not cimported) so that failures can be tested without
    # raising: a failed buffer request falls back to the pure twin.
    int _get_buffer "PyObject_GetBuffer"(object obj, Py_buffer* view, int flags)
    int _get_buffer_exc "PyObject_GetBuffer"(object obj, Py_buffer* view, int flags) except -1
    void PyErr_Clear()
    bint PyBytes_CheckExact(object o)
    bint PyByteArray_CheckExact(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyMemoryView_Check(object o)
    long PyLong_AsLongAndOverflow(object o, int* overflow) except? -1
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    void PyObject_GC_UnTrack(object o)


# The hot kernels are plain C in _kernels.h (so gcc can vectorize them
# freely, and fuzz/kernels_fuzz.c can fuzz them on their own).
cdef extern from "_kernels.h":
    void wsn_unmask_inplace(uint8_t* p, size_t n, const uint8_t* mask, unsigned off) nogil
    void wsn_unmask_copy(uint8_t* dst, const uint8_t* src, size_t n, const uint8_t* mask, unsigned off) nogil
    uint8_t wsn_unmask_copy_or(uint8_t* dst, const uint8_t* src, size_t n, const uint8_t* mask, unsigned off) nogil
    void wsn_utf8_init() nogil
    uint32_t wsn_utf8_run(uint32_t state, const uint8_t* p, size_t n) nogil
    size_t wsn_write_header(uint8_t* h, unsigned first, unsigned mbit, uint64_t len) nogil
    size_t wsn_header_size(uint64_t len) nogil
    size_t wsn_utf8_count(const uint8_t* p, size_t n, uint8_t* maxlead) nogil
    void wsn_utf8_decode1(uint8_t* out, const uint8_t* p, size_t n) nogil
    void wsn_utf8_decode2(uint16_t* out, const uint8_t* p, size_t n) nogil
    void wsn_utf8_decode4(uint32_t* out, const uint8_t* p, size_t n) nogil
    uint32_t U_ERR "WSN_U_ERR"
    uint32_t U_ACC "WSN_U_ACC"

wsn_utf8_init()


# Wire constants. The protocol fixes them; the check below keeps them tied
# to ``_common`` (the single source of truth for both twins).
cdef enum:
    C_OP_CONT = 0x0
    C_OP_TEXT = 0x1
    C_OP_BINARY = 0x2
    C_OP_CLOSE = 0x8
    C_OP_PING = 0x9
    C_OP_PONG = 0xA
    C_MAX_CONTROL = 125

if (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, MAX_CONTROL_PAYLOAD) != (
    C_OP_CONT, C_OP_TEXT, C_OP_BINARY, C_OP_CLOSE, C_OP_PING, C_OP_PONG, C_MAX_CONTROL
):
    raise ImportError("wsnest.core._frames_c: constants out of sync with _common")

# Parser states.
cdef enum:
    ST_HEADER = 0
    ST_PAYLOAD = 1
    ST_DONE = 2

# Failure codes: indexes into _FAILS.
cdef enum:
    E_RSV = 1
    E_OPCODE = 2
    E_CTL_FRAGMENTED = 3
    E_CTL_TOO_LONG = 4
    E_UNMASKED = 5
    E_CONT_UNEXPECTED = 6
    E_DATA_UNEXPECTED = 7
    E_NON_MINIMAL = 8
    E_LENGTH_MSB = 9
    E_TOO_BIG = 10
    E_BAD_UTF8 = 11
    E_MASKED = 12

# A first-and-final frame split across feed calls gets its result allocated
# at once up to this size; beyond it (possible only with a large or no
# max_message_size) the buffer grows as payload arrives, so a header alone
# cannot make the parser reserve gigabytes.
cdef enum:
    PREALLOC_MAX = 16 << 20
    STACK_TEXT = 512
    SPARE_MIN = 256 << 10
    DECODE_MIN = 4096


# One spare message buffer per process (the GIL guards it), for messages of
# SPARE_MIN bytes or more: glibc hands blocks this size back to the kernel
# when freed, so every large message would otherwise fault its buffer in
# again, page by page (4096 faults for 16 MiB).
cdef uint8_t* _spare = NULL
cdef size_t _spare_cap = 0
cdef bint _spare_used = False

# The last large non-ASCII text message decoded, and the UTF-8 it came from
# (a buffer of _kept_cap bytes): sending that very str (an echo, a relay)
# then writes these bytes instead of encoding the str again. The buffer
# goes back to being the spare when the next large message needs one, or
# to utf8_payload's view, which returns it when released. trim_spare()
# drops both, and the spare, when no large message came since its last call.
cdef object _kept_text = None
cdef uint8_t* _kept_utf8 = NULL
cdef size_t _kept_cap = 0
cdef size_t _kept_len = 0


cdef void _unkeep() noexcept:
    """Forget the kept text; its buffer becomes the spare (or is freed)."""
    global _kept_text, _kept_utf8, _kept_cap, _kept_len
    cdef uint8_t* b = _kept_utf8
    _kept_text = None
    _kept_utf8 = NULL
    _kept_len = 0
    if b != NULL:
        _give_spare(b, _kept_cap)


cdef void _keep(object text, uint8_t* b, size_t cap, size_t n) noexcept:
    """Keep ``b`` (``cap`` bytes, owned from now on) as the UTF-8 of ``text``."""
    global _kept_text, _kept_utf8, _kept_cap, _kept_len
    _unkeep()
    _kept_text = text
    _kept_utf8 = b
    _kept_cap = cap
    _kept_len = n


cdef uint8_t* _take_spare(size_t need, size_t* cap) noexcept:
    """The spare buffer if it holds ``need`` bytes (its size in ``cap``), else
    NULL. With no spare, the kept text's buffer is taken back."""
    global _spare, _spare_cap, _spare_used
    cdef uint8_t* b
    if _spare == NULL and _kept_utf8 != NULL:
        _unkeep()
    b = _spare
    if b == NULL or _spare_cap < need:
        return NULL
    cap[0] = _spare_cap
    _spare = NULL
    _spare_cap = 0
    _spare_used = True
    return b


cdef void _give_spare(uint8_t* b, size_t cap) noexcept:
    """Free ``b`` (``cap`` bytes), or keep it as the spare if it is large;
    of two large buffers the larger is kept."""
    global _spare, _spare_cap, _spare_used
    if cap < SPARE_MIN or cap <= _spare_cap:
        PyMem_Free(b)
        return
    if _spare != NULL:
        PyMem_Free(_spare)
    _spare = b
    _spare_cap = cap
    _spare_used = True


def trim_spare():
    """Free the spare buffer of large messages (and forget the last large
    text kept with its UTF-8) if no message used them since the last call
    (a server calls this about once a second); True if memory was freed."""
    global _spare, _spare_cap, _spare_used
    if _spare_used or (_spare == NULL and _kept_utf8 == NULL):
        _spare_used = False
        return False
    _unkeep()
    PyMem_Free(_spare)
    _spare = NULL
    _spare_cap = 0
    return True


cdef char* _FORMAT_B = b"B"


cdef class _Utf8:
    """Exports the UTF-8 of a ``str`` as a read-only buffer without copying
    it: the kept UTF-8 the ``str`` was decoded from (which this object then
    owns, and gives back as the spare when freed), else the UTF-8 CPython
    keeps inside the ``str`` (an ASCII string's own data, or encoded once
    and cached there). So a large text message is written to the socket
    straight from memory that is already there."""

    cdef object _text
    cdef const char* _p
    cdef Py_ssize_t _n
    cdef uint8_t* _owned
    cdef size_t _owned_cap

    def __dealloc__(self):
        if self._owned != NULL:
            _give_spare(self._owned, self._owned_cap)
            self._owned = NULL

    def __getbuffer__(self, Py_buffer* view, int flags):
        view.buf = <void*>self._p
        view.obj = self
        view.len = self._n
        view.readonly = 1
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = _FORMAT_B
        view.ndim = 1
        view.shape = NULL
        if flags & PyBUF_ND:
            view.shape = &self._n
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer* view):
        pass


def utf8_payload(text):
    """The UTF-8 of the ``str`` ``text`` as a read-only bytes-like object
    (a ``memoryview`` over UTF-8 already in memory: no copy)."""
    global _kept_text, _kept_utf8, _kept_len
    cdef _Utf8 u
    if not PyUnicode_CheckExact(text):
        return _py().utf8_payload(text)
    u = _Utf8.__new__(_Utf8)
    u._text = text
    if text is _kept_text:
        u._owned = _kept_utf8
        u._owned_cap = _kept_cap
        u._p = <const char*>_kept_utf8
        u._n = <Py_ssize_t>_kept_len
        _kept_text = None
        _kept_utf8 = NULL
        _kept_len = 0
    else:
        u._p = PyUnicode_AsUTF8AndSize(text, &u._n)
    return memoryview(u)

# Event kinds: the very objects of _common.
cdef object K_TEXT = OP_TEXT
cdef object K_BINARY = OP_BINARY
cdef object K_PING = OP_PING
cdef object K_PONG = OP_PONG
cdef object K_TEXT_DEFLATED = OP_TEXT_DEFLATED
cdef object K_BINARY_DEFLATED = OP_BINARY_DEFLATED
cdef object K_FRAGMENT = FRAGMENT

# Failure events are immutable, so each one is built once.
cdef tuple _FAILS = (
    None,
    (FAIL, CLOSE_PROTOCOL_ERROR, R_RSV),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_OPCODE),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_CTL_FRAGMENTED),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_CTL_TOO_LONG),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_UNMASKED),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_CONT_UNEXPECTED),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_DATA_UNEXPECTED),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_NON_MINIMAL),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_LENGTH_MSB),
    (FAIL, CLOSE_TOO_BIG, R_TOO_BIG),
    (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8),
    (FAIL, CLOSE_PROTOCOL_ERROR, R_MASKED),
)


# -- argument helpers --------------------------------------------------------

cdef object _pure_module = None


cdef object _py():
    """The pure twin, which handles every unusual argument type."""
    global _pure_module
    if _pure_module is None:
        from . import _frames_py
        _pure_module = _frames_py
    return _pure_module


cdef bint _byte_buffer(object obj, Py_buffer* view, bint writable):
    """Acquire ``view`` on ``obj`` if it is plain bytes: ``bytes`` (unless
    ``writable``), ``bytearray``, or a 1-D C-contiguous memoryview of format
    'B' (writable if asked), the types for which ``len(obj)`` counts bytes.
    Returns False, with no exception set and nothing to release, otherwise
    (the caller then hands the call to the pure twin)."""
    if PyByteArray_CheckExact(obj) or (PyBytes_CheckExact(obj) and not writable):
        if _get_buffer(obj, view, PyBUF_SIMPLE) == 0:
            return True
        PyErr_Clear()
        return False
    if not PyMemoryView_Check(obj):
        return False
    # Acquire first, then inspect: a released view fails here cleanly.
    if _get_buffer(obj, view, PyBUF_RECORDS_RO) != 0:
        PyErr_Clear()
        return False
    if (
        view.ndim == 1
        and view.itemsize == 1
        and view.format != NULL
        and strcmp(view.format, b"B") == 0
        and PyBuffer_IsContiguous(view, c"C")
        and not (writable and view.readonly)
    ):
        return True
    PyBuffer_Release(view)
    return False


cdef inline bint _is_mask_type(object mask):
    return PyBytes_CheckExact(mask) or PyByteArray_CheckExact(mask)


cdef inline bint _is_payload_type(object payload):
    return (
        PyBytes_CheckExact(payload)
        or PyUnicode_CheckExact(payload)
        or PyByteArray_CheckExact(payload)
        or PyMemoryView_Check(payload)
    )


cdef inline int _copy_mask(object mask, uint8_t* out) except -1:
    """Check a bytes/bytearray mask and copy its 4 bytes to ``out``."""
    if len(mask) != 4:
        raise ValueError("mask: must be exactly 4 bytes")
    if PyBytes_CheckExact(mask):
        memcpy(out, PyBytes_AS_STRING(mask), 4)
    else:
        memcpy(out, PyByteArray_AS_STRING(mask), 4)
    return 0


cdef inline int _opcode_value(object opcode) except -1:
    """Range-check an exact ``int`` opcode like ``_frames_py._header``."""
    cdef int overflow = 0
    cdef long v = PyLong_AsLongAndOverflow(opcode, &overflow)
    if overflow or v < 0 or v > 0xF:
        raise ValueError(f"opcode: {opcode} is not a 4-bit value")
    return <int>v


# -- stateless functions -----------------------------------------------------

def apply_mask(data, mask, offset=0):
    """Return ``data`` XORed with the 4-byte ``mask``, starting ``offset``
    bytes into the mask cycle (for payloads that arrive in pieces)."""
    cdef Py_buffer view
    cdef uint8_t m[4]
    cdef bytes out
    cdef unsigned off
    if not (_is_mask_type(mask) and PyLong_CheckExact(offset)):
        return _py().apply_mask(data, mask, offset)
    _copy_mask(mask, m)  # the pure twin checks the mask before anything else
    if not _byte_buffer(data, &view, False):
        return _py().apply_mask(data, mask, offset)
    try:
        if view.len == 0:
            return b""
        off = <unsigned>(offset & 3)
        out = PyBytes_FromStringAndSize(NULL, view.len)
        wsn_unmask_copy(<uint8_t*>PyBytes_AS_STRING(out), <const uint8_t*>view.buf, <size_t>view.len, m, off)
        return out
    finally:
        PyBuffer_Release(&view)


def mask_inplace(buf, mask, offset=0):
    """XOR the writable buffer ``buf`` with ``mask`` in place."""
    cdef Py_buffer view
    cdef uint8_t m[4]
    cdef unsigned off
    if not (_is_mask_type(mask) and PyLong_CheckExact(offset)):
        return _py().mask_inplace(buf, mask, offset)
    _copy_mask(mask, m)  # checked first like the pure twin; copied as ``mask`` may be ``buf``
    if not _byte_buffer(buf, &view, True):
        return _py().mask_inplace(buf, mask, offset)
    try:
        if view.len:
            off = <unsigned>(offset & 3)
            wsn_unmask_inplace(<uint8_t*>view.buf, <size_t>view.len, m, off)
    finally:
        PyBuffer_Release(&view)


def validate_utf8(data):
    """Return whether ``data`` is complete, valid UTF-8."""
    cdef Py_buffer view
    cdef uint32_t state
    if _get_buffer(data, &view, PyBUF_SIMPLE) != 0:
        PyErr_Clear()
        return _py().validate_utf8(data)
    state = wsn_utf8_run(U_ACC, <const uint8_t*>view.buf, <size_t>view.len)
    PyBuffer_Release(&view)
    return state == U_ACC


def encode_frame(opcode, payload=b"", fin=True, mask=None):
    """Encode one frame. Server frames are unmasked (``mask=None``); pass a
    4-byte ``mask`` to build a client frame."""
    cdef Py_buffer view
    cdef bint have_view = False
    cdef const uint8_t* src
    cdef Py_ssize_t n
    cdef uint8_t m[4]
    cdef int op
    cdef unsigned first
    cdef size_t hlen
    cdef bytes out
    cdef uint8_t* dst
    if not (PyLong_CheckExact(opcode) and _is_payload_type(payload) and (mask is None or _is_mask_type(mask))):
        return _py().encode_frame(opcode, payload, fin, mask)
    if PyBytes_CheckExact(payload):
        src = <const uint8_t*>PyBytes_AS_STRING(payload)
        n = PyBytes_GET_SIZE(payload)
    elif PyUnicode_CheckExact(payload):
        src = <const uint8_t*>PyUnicode_AsUTF8AndSize(payload, &n)
    else:
        if _get_buffer(payload, &view, PyBUF_SIMPLE) != 0:
            PyErr_Clear()
            return _py().encode_frame(opcode, payload, fin, mask)
        have_view = True
        src = <const uint8_t*>view.buf
        n = view.len
    try:
        if mask is not None:
            _copy_mask(mask, m)
        op = _opcode_value(opcode)
        first = (0x80 if fin else 0) | <unsigned>op
        hlen = wsn_header_size(<uint64_t>n)
        if mask is None:
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>hlen + n)
            dst = <uint8_t*>PyBytes_AS_STRING(out)
            wsn_write_header(dst, first, 0, <uint64_t>n)
            if n:
                memcpy(dst + hlen, src, <size_t>n)
        else:
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>hlen + 4 + n)
            dst = <uint8_t*>PyBytes_AS_STRING(out)
            wsn_write_header(dst, first, 0x80, <uint64_t>n)
            memcpy(dst + hlen, m, 4)
            wsn_unmask_copy(dst + hlen + 4, src, <size_t>n, m, 0)
        return out
    finally:
        if have_view:
            PyBuffer_Release(&view)


def append_frame(out, opcode, payload, fin=True):
    """Append one unmasked (server) frame to ``out``; return the bytes added."""
    cdef Py_buffer view
    cdef bint have_view = False
    cdef const uint8_t* src = NULL
    cdef Py_ssize_t n, old
    cdef int op
    cdef unsigned first
    cdef size_t hlen
    cdef uint8_t* dst
    if not (PyByteArray_CheckExact(out) and PyLong_CheckExact(opcode) and _is_payload_type(payload)):
        return _py().append_frame(out, opcode, payload, fin)
    if PyBytes_CheckExact(payload):
        src = <const uint8_t*>PyBytes_AS_STRING(payload)
        n = PyBytes_GET_SIZE(payload)
    elif PyUnicode_CheckExact(payload):
        src = <const uint8_t*>PyUnicode_AsUTF8AndSize(payload, &n)
    elif PyByteArray_CheckExact(payload):
        # No buffer export: ``payload`` may be ``out`` itself. Its pointer is
        # read after the resize below.
        n = PyByteArray_GET_SIZE(payload)
    else:
        if _get_buffer(payload, &view, PyBUF_SIMPLE) != 0:
            PyErr_Clear()
            return _py().append_frame(out, opcode, payload, fin)
        have_view = True
        src = <const uint8_t*>view.buf
        n = view.len
    try:
        op = _opcode_value(opcode)
        first = (0x80 if fin else 0) | <unsigned>op
        hlen = wsn_header_size(<uint64_t>n)
        old = PyByteArray_GET_SIZE(out)
        PyByteArray_Resize(out, old + <Py_ssize_t>hlen + n)
        if src == NULL:
            src = <const uint8_t*>PyByteArray_AS_STRING(payload)
        dst = <uint8_t*>PyByteArray_AS_STRING(out) + old
        wsn_write_header(dst, first, 0, <uint64_t>n)
        if n:
            memcpy(dst + hlen, src, <size_t>n)
        return <Py_ssize_t>hlen + n
    finally:
        if have_view:
            PyBuffer_Release(&view)


cdef inline tuple _event(object kind, object payload):
    """A ``(kind, payload)`` event. It holds an int and a bytes or str, so it
    can never be part of a reference cycle: it is untracked at once (CPython
    untracks such tuples itself at the first collection), which keeps a feed
    returning thousands of events from paying for gen-0 passes over them."""
    cdef tuple t = PyTuple_New(2)
    Py_INCREF(kind)
    PyTuple_SET_ITEM(t, 0, kind)
    Py_INCREF(payload)
    PyTuple_SET_ITEM(t, 1, payload)
    PyObject_GC_UnTrack(t)
    return t


cdef inline tuple _fragment(object kind, bytes piece, bint final):
    """A ``(FRAGMENT, kind, piece, final)`` event, untracked like ``_event``'s."""
    cdef tuple t = PyTuple_New(4)
    cdef object flag = True if final else False
    Py_INCREF(K_FRAGMENT)
    PyTuple_SET_ITEM(t, 0, K_FRAGMENT)
    Py_INCREF(kind)
    PyTuple_SET_ITEM(t, 1, kind)
    Py_INCREF(piece)
    PyTuple_SET_ITEM(t, 2, piece)
    Py_INCREF(flag)
    PyTuple_SET_ITEM(t, 3, flag)
    PyObject_GC_UnTrack(t)
    return t


cdef object _build_str(const uint8_t* p, size_t n):
    """The ``str`` of ``p[:n]``, UTF-8 that the DFA has accepted: large text
    is decoded straight into a ``str`` allocated at its final size and kind
    (CPython's decoder checks every byte again and widens its buffer as
    wider characters turn up)."""
    cdef uint8_t maxlead
    cdef size_t count
    cdef object msg
    if n < DECODE_MIN:
        return PyUnicode_DecodeUTF8(<const char*>p, <Py_ssize_t>n, NULL)
    count = wsn_utf8_count(p, n, &maxlead)
    if maxlead < 0x80:
        msg = PyUnicode_New(<Py_ssize_t>n, 127)
        memcpy(PyUnicode_DATA(msg), p, n)
    elif maxlead < 0xC4:
        msg = PyUnicode_New(<Py_ssize_t>count, 255)
        wsn_utf8_decode1(<uint8_t*>PyUnicode_DATA(msg), p, n)
    elif maxlead < 0xF0:
        msg = PyUnicode_New(<Py_ssize_t>count, 0xFFFF)
        wsn_utf8_decode2(<uint16_t*>PyUnicode_DATA(msg), p, n)
    else:
        msg = PyUnicode_New(<Py_ssize_t>count, 0x10FFFF)
        wsn_utf8_decode4(<uint32_t*>PyUnicode_DATA(msg), p, n)
    return msg


cdef object _decode_or_none(const char* s, Py_ssize_t n):
    """``str`` from UTF-8, or ``None`` when it is not valid UTF-8."""
    try:
        return PyUnicode_DecodeUTF8(s, n, NULL)
    except UnicodeDecodeError:
        return None


# -- the parser --------------------------------------------------------------

@cython.final
@cython.no_gc
@cython.auto_pickle(False)
cdef class FrameParser:
    """Incremental parser for the frames a WebSocket peer sends.

    ``masked`` is the role: ``True`` (the default) for a server, which reads
    client frames (masked, every one of them); ``False`` for a client, which
    reads server frames (never masked). A frame of the other kind fails the
    connection with 1002.

    ``max_message_size`` bounds a whole (possibly fragmented) message; it is
    checked against each frame's declared length before any of its payload
    is buffered. ``None`` removes the bound. With ``decode_text=False`` text
    messages are still validated but delivered as ``bytes``.

    ``deflate=True`` (permessage-deflate was negotiated): RSV1 on the first
    frame of a text or binary message marks it compressed; such a message is
    delivered as ``OP_TEXT_DEFLATED``/``OP_BINARY_DEFLATED`` with its raw
    bytes, and ``max_message_size`` bounds those compressed bytes. RSV1
    anywhere else, and RSV2/RSV3 always, is still a protocol error.

    ``stream=True``: text and binary messages come as ``(FRAGMENT, kind,
    piece, final)`` events, piece by piece as their payload arrives, never
    reassembled (see ``_frames_py``); ``decode_text`` then has no effect.
    """

    cdef int _state
    cdef int _hdr_len
    cdef uint8_t _hdr[14]
    # Current frame.
    cdef int _opcode
    cdef bint _fin
    cdef bint _rsv1
    cdef uint64_t _remaining
    cdef uint64_t _frame_len
    # This frame's masking key; all zeros in the client role.
    cdef uint8_t _mask[4]
    cdef unsigned _mask_pos
    # Message being assembled.
    cdef int _msg_op
    cdef uint64_t _msg_len
    # A compressed message (RSV1 on its first frame) is assembled like a
    # binary one: _text stays False, so no UTF-8 check and no decoding.
    cdef bint _deflated
    cdef bint _text
    cdef bint _nonascii
    cdef uint32_t _utf8
    # Options. _masked is the role: True (server) when frames carry a
    # masking key.
    cdef bint _has_max
    cdef bint _masked
    cdef uint64_t _max
    cdef bint _decode_text
    cdef bint _deflate
    cdef bint _stream
    # Assembly buffer: C-owned (PyMem_Malloc, so tracemalloc sees it like the
    # pure twin's bytearray) or the inside of ``_pre``, a bytes result
    # preallocated at its final size.
    cdef uint8_t* _buf
    cdef size_t _buf_len
    cdef size_t _buf_cap
    cdef bint _buf_owned
    cdef object _pre
    # Control frame payload.
    cdef int _ctl_len
    cdef uint8_t _ctl[C_MAX_CONTROL]

    def __cinit__(self):
        self._buf = NULL
        self._buf_owned = False
        self._pre = None
        self._utf8 = U_ACC

    def __dealloc__(self):
        if self._buf_owned and self._buf != NULL:
            _give_spare(self._buf, self._buf_cap)
        self._buf = NULL

    def __init__(
        self, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, decode_text=True, *, deflate=False, masked=True, stream=False
    ):
        if max_message_size is not None and max_message_size < 0:
            raise ValueError("max_message_size: must be >= 0 or None")
        if max_message_size is None:
            self._has_max = False
            self._max = 0
        else:
            limit = int(max_message_size)
            # A bound of 2**64 or more can never be reached: same as none.
            self._has_max = 0 <= limit < 0x10000000000000000
            self._max = limit if self._has_max else 0
        self._decode_text = bool(decode_text)
        self._deflate = bool(deflate)
        self._masked = bool(masked)
        self._stream = bool(stream)
        self._drop_message()
        self._state = ST_HEADER
        self._hdr_len = 0
        self._opcode = 0
        self._fin = False
        self._rsv1 = False
        self._remaining = 0
        self._frame_len = 0
        memset(self._mask, 0, 4)
        self._mask_pos = 0
        self._ctl_len = 0

    @property
    def masked(self):
        """The role: True for a server (frames must be masked), False for a
        client (frames must not be)."""
        return self._masked

    @property
    def stream(self):
        """Whether messages come piece by piece as ``FRAGMENT`` events."""
        return self._stream

    @property
    def finished(self):
        """True once a close or a failure has been returned; later input is ignored."""
        return self._state == ST_DONE

    def feed(self, data):
        """Consume ``data`` entirely and return the events it completed.

        ``data`` is any C-contiguous bytes-like object. If it is writable
        (``bytearray``, a writable ``memoryview``, ...), payloads may be
        unmasked in place inside it: the caller must treat its contents as
        garbage after the call (a server's reused receive buffer is fine).
        A read-only ``data`` (``bytes``) is never modified, and neither is
        any ``data`` in the client role (nothing to unmask) or in stream mode
        (each piece is unmasked while copied out).
        """
        cdef list events = []
        cdef Py_buffer view
        if self._state == ST_DONE:
            return events
        if self._stream:
            self._run_stream(data, events)
            return events
        if PyBytes_CheckExact(data):
            self._run(<uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), False, events)
            return events
        if _get_buffer(data, &view, PyBUF_SIMPLE) != 0:
            PyErr_Clear()
            # The pure twin's conversion: raises its exception for this input.
            data = memoryview(data).cast("B")
            _get_buffer_exc(data, &view, PyBUF_SIMPLE)
        try:
            self._run(<uint8_t*>view.buf, view.len, not view.readonly, events)
        finally:
            PyBuffer_Release(&view)
        return events

    # -- internals -------------------------------------------------------

    cdef int _run(self, uint8_t* p, Py_ssize_t n, bint writable, list events) except -1:
        cdef Py_ssize_t pos = 0
        cdef size_t take, avail
        cdef int r
        while True:
            if self._state == ST_HEADER:
                if pos >= n:
                    return 0
                r = self._read_header(p, &pos, n)
                if r == 0:
                    return 0  # header still incomplete: wait for more bytes
                if r < 0:
                    return self._fail(events, -r)
                if self._remaining == 0:
                    self._end_frame(events)
                    if self._state == ST_DONE:
                        return 0
                continue
            if pos >= n:
                return 0
            avail = <size_t>(n - pos)
            take = avail if avail < self._remaining else <size_t>self._remaining
            if take == self._frame_len:
                # The whole payload of this frame is here.
                if self._opcode >= C_OP_CLOSE:
                    self._control_whole(p + pos, take, events)
                    pos += take
                    if self._state == ST_DONE:
                        return 0
                    continue
                if self._fin and self._opcode != C_OP_CONT:
                    self._message_whole(p + pos, take, writable, events)
                    pos += take
                    if self._state == ST_DONE:
                        return 0
                    continue
            if self._opcode >= C_OP_CLOSE:
                self._copy_payload(self._ctl + self._ctl_len, p + pos, take, self._mask_pos)
                self._ctl_len += <int>take
            elif self._add_data(p + pos, take):
                return self._fail(events, E_BAD_UTF8)
            pos += take
            self._mask_pos = (self._mask_pos + <unsigned>take) & 3
            self._remaining -= take
            if self._remaining == 0:
                self._end_frame(events)
                if self._state == ST_DONE:
                    return 0

    cdef int _run_stream(self, object data, list events) except -1:
        """``feed`` in stream mode: data payload goes out as it comes in. The
        input is only read (pieces are unmasked while copied into their
        ``bytes``), so writable or not makes no difference."""
        cdef Py_buffer view
        cdef const uint8_t* p
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t n
        cdef size_t take, avail
        cdef int r
        if _get_buffer(data, &view, PyBUF_SIMPLE) != 0:
            PyErr_Clear()
            # The pure twin's conversion: raises its exception for this input.
            data = memoryview(data).cast("B")
            _get_buffer_exc(data, &view, PyBUF_SIMPLE)
        p = <const uint8_t*>view.buf
        n = view.len
        try:
            while True:
                if self._state == ST_HEADER:
                    if pos >= n:
                        return 0
                    r = self._read_header(p, &pos, n)
                    if r == 0:
                        return 0  # header still incomplete: wait for more bytes
                    if r < 0:
                        return self._fail(events, -r)
                    if self._remaining == 0:
                        if self._opcode >= C_OP_CLOSE:
                            self._end_frame(events)
                        else:
                            self._piece(p, 0, events)
                        if self._state == ST_DONE:
                            return 0
                    continue
                if pos >= n:
                    return 0
                avail = <size_t>(n - pos)
                take = avail if avail < self._remaining else <size_t>self._remaining
                if self._opcode >= C_OP_CLOSE:
                    if take == self._frame_len:
                        self._control_whole(p + pos, take, events)
                    else:
                        self._copy_payload(self._ctl + self._ctl_len, p + pos, take, self._mask_pos)
                        self._ctl_len += <int>take
                        self._mask_pos = (self._mask_pos + <unsigned>take) & 3
                        self._remaining -= take
                        if self._remaining == 0:
                            self._end_frame(events)
                else:
                    self._piece(p + pos, take, events)
                pos += take
                if self._state == ST_DONE:
                    return 0
        finally:
            PyBuffer_Release(&view)

    cdef int _piece(self, const uint8_t* src, size_t take, list events) except -1:
        """Stream mode: the ``take`` payload bytes at ``src`` (all of this
        frame's payload in this feed) go out as one FRAGMENT event, unless
        their text fails UTF-8."""
        cdef bytes piece = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>take)
        cdef uint8_t* dst = <uint8_t*>PyBytes_AS_STRING(piece)
        cdef uint8_t acc
        cdef bint final
        cdef object kind
        self._remaining -= take
        final = self._fin and self._remaining == 0
        if self._text:
            # The client role goes through this kernel too (its key is all
            # zeros): the OR of the bytes is wanted either way.
            acc = wsn_unmask_copy_or(dst, src, take, self._mask, self._mask_pos)
            if (acc & 0x80) or self._utf8 != U_ACC:
                self._utf8 = wsn_utf8_run(self._utf8, dst, take)
                if self._utf8 == U_ERR or (final and self._utf8 != U_ACC):
                    return self._fail(events, E_BAD_UTF8)
            kind = K_TEXT
        else:
            self._copy_payload(dst, src, take, self._mask_pos)
            kind = self._bytes_kind()
        self._mask_pos = (self._mask_pos + <unsigned>take) & 3
        if self._remaining == 0:
            self._state = ST_HEADER
        if final:
            self._drop_message()
        else:
            self._msg_len += take
            if take == 0:
                return 0
        events.append(_fragment(kind, piece, final))
        return 0

    cdef inline int _read_header(self, const uint8_t* p, Py_ssize_t* ppos, Py_ssize_t n):
        """Read header bytes at ``p[ppos[0]:n]``: 1 when the header is
        complete, 0 when more bytes are needed, ``-code`` on a failure.

        Each field is checked as soon as its bytes are in (as in the pure
        twin), so a bad frame fails without waiting for what follows."""
        cdef Py_ssize_t pos = ppos[0]
        cdef Py_ssize_t avail = n - pos
        cdef const uint8_t* h
        cdef int len7, ext_end, need, take, err
        if self._hdr_len == 0 and avail >= 2:
            # Fast path: the whole header is in the input.
            h = p + pos
            len7 = h[1] & 0x7F
            ext_end = 4 if len7 == 126 else (10 if len7 == 127 else 2)
            need = ext_end + 4 if self._masked else ext_end
            if avail >= need:
                err = self._check_first_two(h[0], h[1])
                if err == 0:
                    err = self._check_length(h, len7)
                if err:
                    return -err
                if self._masked:
                    memcpy(self._mask, h + ext_end, 4)
                self._mask_pos = 0
                self._state = ST_PAYLOAD
                ppos[0] = pos + need
                return 1
        # Slow path: gather the header in self._hdr.
        h = self._hdr
        if self._hdr_len < 2:
            take = 2 - self._hdr_len
            if take > n - pos:
                take = <int>(n - pos)
            memcpy(self._hdr + self._hdr_len, p + pos, take)
            self._hdr_len += take
            pos += take
            ppos[0] = pos
            if self._hdr_len < 2:
                return 0
            err = self._check_first_two(h[0], h[1])
            if err == 0 and (h[1] & 0x7F) < 126:
                err = self._check_length(h, h[1] & 0x7F)
            if err:
                return -err
        len7 = h[1] & 0x7F
        ext_end = 4 if len7 == 126 else (10 if len7 == 127 else 2)
        if self._hdr_len < ext_end:
            take = ext_end - self._hdr_len
            if take > n - pos:
                take = <int>(n - pos)
            memcpy(self._hdr + self._hdr_len, p + pos, take)
            self._hdr_len += take
            pos += take
            ppos[0] = pos
            if self._hdr_len < ext_end:
                return 0
            err = self._check_length(h, len7)
            if err:
                return -err
        need = ext_end + 4 if self._masked else ext_end  # the masking key
        if self._hdr_len < need:
            take = need - self._hdr_len
            if take > n - pos:
                take = <int>(n - pos)
            memcpy(self._hdr + self._hdr_len, p + pos, take)
            self._hdr_len += take
            pos += take
            ppos[0] = pos
            if self._hdr_len < need:
                return 0
        if self._masked:
            memcpy(self._mask, h + ext_end, 4)
        self._mask_pos = 0
        self._hdr_len = 0
        self._state = ST_PAYLOAD
        return 1

    cdef inline int _check_first_two(self, uint8_t b0, uint8_t b1):
        cdef int opcode
        cdef bint fin
        cdef bint rsv1 = False
        if b0 & 0x70:
            # Only RSV1, only with deflate, only on a text or binary frame
            # (whether it starts a message is checked below, as for any frame).
            if (b0 & 0x70) != 0x40 or not self._deflate or not (C_OP_TEXT <= (b0 & 0x0F) <= C_OP_BINARY):
                return E_RSV
            rsv1 = True
        opcode = b0 & 0x0F
        if not (opcode <= C_OP_BINARY or C_OP_CLOSE <= opcode <= C_OP_PONG):
            return E_OPCODE
        fin = (b0 & 0x80) != 0
        if opcode >= C_OP_CLOSE:
            if not fin:
                return E_CTL_FRAGMENTED
            if (b1 & 0x7F) > C_MAX_CONTROL:
                return E_CTL_TOO_LONG
        if not (b1 & 0x80):
            if self._masked:
                return E_UNMASKED
        elif not self._masked:
            return E_MASKED
        if opcode == C_OP_CONT:
            if self._msg_op == 0:
                return E_CONT_UNEXPECTED
        elif opcode < C_OP_CLOSE and self._msg_op != 0:
            return E_DATA_UNEXPECTED
        self._opcode = opcode
        self._fin = fin
        self._rsv1 = rsv1
        return 0

    cdef inline int _check_length(self, const uint8_t* h, int len7):
        cdef uint64_t length
        if len7 == 126:
            length = (<uint64_t>h[2] << 8) | h[3]
            if length < 126:
                return E_NON_MINIMAL
        elif len7 == 127:
            length = (
                (<uint64_t>h[2] << 56) | (<uint64_t>h[3] << 48) | (<uint64_t>h[4] << 40) | (<uint64_t>h[5] << 32)
                | (<uint64_t>h[6] << 24) | (<uint64_t>h[7] << 16) | (<uint64_t>h[8] << 8) | <uint64_t>h[9]
            )
            if length >> 63:
                return E_LENGTH_MSB
            if length < 65536:
                return E_NON_MINIMAL
        else:
            length = <uint64_t>len7
        # msg_len counts bytes actually received and length < 2**63: no overflow.
        if self._opcode < C_OP_CLOSE and self._has_max and self._msg_len + length > self._max:
            return E_TOO_BIG
        self._remaining = length
        self._frame_len = length
        if self._opcode != C_OP_CONT and self._opcode < C_OP_CLOSE:
            self._msg_op = self._opcode
            self._deflated = self._rsv1
            if self._opcode == C_OP_TEXT and not self._rsv1:
                self._text = True
                self._utf8 = U_ACC
                self._nonascii = False
        return 0

    cdef int _fail(self, list events, int code) except -1:
        events.append(_FAILS[code])
        self._state = ST_DONE
        self._drop_message()
        self._ctl_len = 0
        return 0

    cdef void _drop_message(self):
        """Forget the message being assembled and free its buffer (a large
        one becomes the spare)."""
        if self._buf_owned and self._buf != NULL:
            _give_spare(self._buf, self._buf_cap)
        self._buf = NULL
        self._buf_owned = False
        self._buf_len = 0
        self._buf_cap = 0
        self._pre = None
        self._msg_op = 0
        self._msg_len = 0
        self._deflated = False
        self._text = False
        self._nonascii = False
        self._utf8 = U_ACC

    cdef inline object _bytes_kind(self):
        """Event kind of a message assembled as bytes (binary or compressed)."""
        if not self._deflated:
            return K_BINARY
        return K_TEXT_DEFLATED if self._msg_op == C_OP_TEXT else K_BINARY_DEFLATED

    cdef inline void _copy_payload(self, uint8_t* dst, const uint8_t* src, size_t n, unsigned off) noexcept:
        """``dst[:n]`` = the payload bytes at ``src``: unmasked with the key
        from ``off`` (server role), or as they are (client role)."""
        if self._masked:
            wsn_unmask_copy(dst, src, n, self._mask, off)
        else:
            memcpy(dst, src, n)

    cdef int _control_whole(self, const uint8_t* src, size_t n, list events) except -1:
        """A control frame whose payload is all in the input."""
        cdef bytes payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        self._copy_payload(<uint8_t*>PyBytes_AS_STRING(payload), src, n, 0)
        self._state = ST_HEADER
        return self._control_event(payload, events)

    cdef int _control_event(self, bytes payload, list events) except -1:
        if self._opcode == C_OP_CLOSE:
            events.append(parse_close_payload(payload))  # a close or a failure
            self._state = ST_DONE
            self._drop_message()
        elif self._opcode == C_OP_PING:
            events.append(_event(K_PING, payload))
        else:
            events.append(_event(K_PONG, payload))
        return 0

    cdef int _message_whole(self, uint8_t* src, size_t n, bint writable, list events) except -1:
        """A single-frame message whose payload is all in the input."""
        cdef object msg
        cdef uint8_t* tmp
        cdef uint8_t stack[STACK_TEXT]
        self._state = ST_HEADER
        if not self._text:
            msg = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
            self._copy_payload(<uint8_t*>PyBytes_AS_STRING(msg), src, n, 0)
            events.append(_event(self._bytes_kind(), msg))
            self._msg_op = 0
            self._deflated = False
            return 0
        if not self._decode_text:
            msg = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
            tmp = <uint8_t*>PyBytes_AS_STRING(msg)
            self._copy_payload(tmp, src, n, 0)
            if wsn_utf8_run(U_ACC, tmp, n) != U_ACC:
                return self._fail(events, E_BAD_UTF8)
        elif writable or not self._masked:
            # Unmasked already (client role), or the caller's buffer is ours
            # to scribble on: unmask in place; decode straight from it.
            if self._masked:
                wsn_unmask_inplace(src, n, self._mask, 0)
            msg = _decode_or_none(<const char*>src, <Py_ssize_t>n)
        elif n <= STACK_TEXT:
            wsn_unmask_copy(stack, src, n, self._mask, 0)
            msg = _decode_or_none(<const char*>stack, <Py_ssize_t>n)
        else:
            tmp = <uint8_t*>PyMem_Malloc(n)
            if tmp == NULL:
                raise MemoryError()
            try:
                wsn_unmask_copy(tmp, src, n, self._mask, 0)
                msg = _decode_or_none(<const char*>tmp, <Py_ssize_t>n)
            finally:
                PyMem_Free(tmp)
        if msg is None:
            return self._fail(events, E_BAD_UTF8)
        self._msg_op = 0
        self._text = False
        events.append(_event(K_TEXT, msg))
        return 0

    cdef int _add_data(self, const uint8_t* src, size_t take) except -1:
        """Unmask a data chunk into the message buffer and validate it.
        Returns 1 on invalid UTF-8."""
        cdef uint8_t* dst
        cdef uint8_t acc
        self._msg_len += take
        if self._buf_cap - self._buf_len < take:
            self._reserve(take)
        dst = self._buf + self._buf_len
        self._buf_len += take
        if not self._text:
            self._copy_payload(dst, src, take, self._mask_pos)
            return 0
        # The client role goes through this kernel too (its key is all
        # zeros): the OR of the bytes is wanted either way.
        acc = wsn_unmask_copy_or(dst, src, take, self._mask, self._mask_pos)
        if (acc & 0x80) or self._utf8 != U_ACC:
            if acc & 0x80:
                self._nonascii = True
            self._utf8 = wsn_utf8_run(self._utf8, dst, take)
            if self._utf8 == U_ERR:
                return 1
            if self._pre is not None and self._decode_text:
                self._leave_str()
        return 0

    cdef int _leave_str(self) except -1:
        """The text assembled in ``_pre`` (a ``str`` filled in place while
        it was all ASCII) is not ASCII: move it to a C buffer (the spare if
        it fits), to be decoded at the end."""
        cdef size_t cap = <size_t>self._frame_len
        cdef uint8_t* nb = _take_spare(cap, &cap)
        if nb == NULL:
            nb = <uint8_t*>PyMem_Malloc(cap)
            if nb == NULL:
                raise MemoryError()
        memcpy(nb, self._buf, self._buf_len)
        self._pre = None
        self._buf = nb
        self._buf_owned = True
        self._buf_cap = cap
        return 0

    cdef int _reserve(self, size_t take) except -1:
        cdef size_t need = self._buf_len + take
        cdef size_t cap, hint
        cdef uint8_t* nb
        if (
            self._buf == NULL
            and self._fin
            and self._opcode != C_OP_CONT
            and self._remaining == self._frame_len
            and self._frame_len <= PREALLOC_MAX
        ):
            # First and final frame of known length: allocate the result at
            # its exact size, fill it, no final copy.
            if self._text and self._decode_text and self._frame_len >= SPARE_MIN:
                # Large text: filled straight into its str while it is all
                # ASCII (the common case), moved out by _leave_str if not.
                self._pre = PyUnicode_New(<Py_ssize_t>self._frame_len, 127)
                self._buf = <uint8_t*>PyUnicode_DATA(self._pre)
                self._buf_owned = False
            elif self._text and self._decode_text:
                self._buf = <uint8_t*>PyMem_Malloc(<size_t>self._frame_len)
                if self._buf == NULL:
                    raise MemoryError()
                self._buf_owned = True
            else:
                self._pre = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>self._frame_len)
                self._buf = <uint8_t*>PyBytes_AS_STRING(self._pre)
                self._buf_owned = False
            self._buf_cap = <size_t>self._frame_len
            return 0
        # Geometric growth; reserve the rest of this frame (up to a cap) and
        # never more than the message bound.
        hint = self._buf_len + (<size_t>self._remaining if self._remaining < PREALLOC_MAX else PREALLOC_MAX)
        cap = self._buf_cap * 2
        if cap < hint:
            cap = hint
        if cap < 256:
            cap = 256
        if self._has_max and cap > self._max:
            cap = <size_t>self._max
        if cap < need:
            cap = need
        if self._buf == NULL and cap >= SPARE_MIN:
            nb = _take_spare(cap, &cap)
            if nb != NULL:
                self._buf = nb
                self._buf_owned = True
                self._buf_cap = cap
                return 0
        nb = <uint8_t*>PyMem_Realloc(self._buf, cap)
        if nb == NULL:
            raise MemoryError()
        self._buf = nb
        self._buf_owned = True
        self._buf_cap = cap
        return 0

    cdef int _end_frame(self, list events) except -1:
        cdef object msg
        cdef object kind
        cdef bytes payload
        self._state = ST_HEADER
        if self._opcode >= C_OP_CLOSE:
            payload = PyBytes_FromStringAndSize(<char*>self._ctl, self._ctl_len)
            self._ctl_len = 0
            return self._control_event(payload, events)
        if not self._fin:
            return 0
        if self._text:
            if self._utf8 != U_ACC:
                return self._fail(events, E_BAD_UTF8)
            if not self._decode_text:
                msg = self._take_bytes()
            elif self._pre is not None:
                msg = self._pre  # all ASCII, filled in place
                self._pre = None
                self._buf = NULL
            elif not self._nonascii and self._buf_len > 1:
                msg = PyUnicode_New(<Py_ssize_t>self._buf_len, 127)
                memcpy(PyUnicode_DATA(msg), self._buf, self._buf_len)
            else:
                msg = _build_str(self._buf, self._buf_len)  # validated by the DFA
                if self._buf_owned and self._buf_cap >= SPARE_MIN:
                    _keep(msg, self._buf, self._buf_cap, self._buf_len)
                    self._buf = NULL
                    self._buf_owned = False
            self._drop_message()
            events.append(_event(K_TEXT, msg))
        else:
            msg = self._take_bytes()
            kind = self._bytes_kind()
            self._drop_message()
            events.append(_event(kind, msg))
        return 0

    cdef object _take_bytes(self):
        cdef object msg
        if self._pre is not None:
            msg = self._pre
            self._pre = None
            self._buf = NULL
            return msg
        return PyBytes_FromStringAndSize(<char*>self._buf, <Py_ssize_t>self._buf_len)
