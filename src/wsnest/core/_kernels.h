/* The hot kernels of the compiled WebSocket core (wsnest.core._frames_c).
 *
 * Plain C, header-only (every function is static), so that one copy is
 * compiled into the extension and another, on its own, into the libFuzzer
 * harness fuzz/kernels_fuzz.c, which differential-tests the word-at-a-time
 * unmasking against a byte loop and the UTF-8 DFA against a reference
 * validator. Only the extension's build needs this file (setup.py lists it
 * in `depends` and the sdist ships it); the built module does not.
 *
 * Call wsn_utf8_init() once before wsn_utf8_run().
 */
#ifndef WSNEST_KERNELS_H
#define WSNEST_KERNELS_H

#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER)
#define WSN_RESTRICT __restrict
#else
#define WSN_RESTRICT __restrict__
#endif

#define WSN_HI 0x8080808080808080ULL

/* The word loops below are unrolled 4 times (after vectorization: 64 bytes
   per iteration with SSE2). Left alone, each is a one-vector loop of about
   24 bytes of code whose speed depends on where it lands: across a 64-byte
   line it ran at half speed on an AMD EPYC, and an unrelated edit or build
   flag was enough to put it there (fragmented reassembly 21 -> 17 GB/s,
   mask_inplace 57 -> 29 GB/s in bench/bench_core.py). With four stores per
   iteration the stores bound it wherever it lands. Compilers without the
   pragma ignore it. */
#if defined(__GNUC__)
#define WSN_UNROLL _Pragma("GCC unroll 4")
#else
#define WSN_UNROLL
#endif

/* The 4-byte mask repeated twice, starting `off` bytes into the cycle,
   as a native 64-bit word (byte k of its memory image masks byte k). */
static inline uint64_t wsn_mask_word(const uint8_t *mask, unsigned off) {
    uint8_t m[8];
    uint64_t w;
    unsigned k;
    for (k = 0; k < 8; k++) m[k] = mask[(off + k) & 3u];
    memcpy(&w, m, 8);
    return w;
}

/* p[0:n] ^= mask (cycle starting at `off`), in place. */
static void wsn_unmask_inplace(uint8_t *p, size_t n, const uint8_t *mask, unsigned off) {
    uint64_t w = wsn_mask_word(mask, off);
    uint8_t m[8];
    size_t i, nw = n >> 3;
    WSN_UNROLL
    for (i = 0; i < nw; i++) {
        uint64_t x;
        memcpy(&x, p + 8 * i, 8);
        x ^= w;
        memcpy(p + 8 * i, &x, 8);
    }
    memcpy(m, &w, 8);
    for (i = nw << 3; i < n; i++) p[i] ^= m[i & 7];
}

/* dst[0:n] = src[0:n] ^ mask; dst and src must not overlap. */
static void wsn_unmask_copy(uint8_t *WSN_RESTRICT dst, const uint8_t *WSN_RESTRICT src, size_t n,
                            const uint8_t *mask, unsigned off) {
    uint64_t w = wsn_mask_word(mask, off);
    uint8_t m[8];
    size_t i, nw = n >> 3;
    WSN_UNROLL
    for (i = 0; i < nw; i++) {
        uint64_t x;
        memcpy(&x, src + 8 * i, 8);
        x ^= w;
        memcpy(dst + 8 * i, &x, 8);
    }
    memcpy(m, &w, 8);
    for (i = nw << 3; i < n; i++) dst[i] = src[i] ^ m[i & 7];
}

/* Same as wsn_unmask_copy; returns the OR of all unmasked bytes (so
   `& 0x80` tells whether the chunk was pure ASCII). */
static uint8_t wsn_unmask_copy_or(uint8_t *WSN_RESTRICT dst, const uint8_t *WSN_RESTRICT src, size_t n,
                                  const uint8_t *mask, unsigned off) {
    uint64_t w = wsn_mask_word(mask, off), acc = 0;
    uint8_t m[8], tail = 0;
    size_t i, nw = n >> 3;
    WSN_UNROLL
    for (i = 0; i < nw; i++) {
        uint64_t x;
        memcpy(&x, src + 8 * i, 8);
        x ^= w;
        acc |= x;
        memcpy(dst + 8 * i, &x, 8);
    }
    memcpy(m, &w, 8);
    for (i = nw << 3; i < n; i++) {
        uint8_t b = src[i] ^ m[i & 7];
        dst[i] = b;
        tail |= b;
    }
    acc |= acc >> 32;
    acc |= acc >> 16;
    acc |= acc >> 8;
    return (uint8_t)acc | tail;
}

/* UTF-8 shift-DFA. A state is a shift (a multiple of 6); row[b] holds,
   for every state s, the next state in bits s..s+5. ERR is 0 and row[b]
   has zero low bits, so ERR is absorbing. Rejects exactly what a strict
   decoder rejects, at the first byte that cannot continue a valid
   sequence: C0, C1, F5..FF, stray continuations, E0 + <A0 (overlong),
   ED + >=A0 (surrogate), F0 + <90 (overlong), F4 + >=90 (> U+10FFFF). */
#define WSN_U_ERR 0u
#define WSN_U_ACC 6u
#define WSN_U_T1 12u   /* one continuation byte 80..BF left */
#define WSN_U_T2 18u   /* two left */
#define WSN_U_T3 24u   /* three left */
#define WSN_U_E0 30u   /* after E0: A0..BF, then one more */
#define WSN_U_ED 36u   /* after ED: 80..9F, then one more */
#define WSN_U_F0 42u   /* after F0: 90..BF, then two more */
#define WSN_U_F4 48u   /* after F4: 80..8F, then two more */

static uint64_t wsn_utf8_row[256];

static void wsn_utf8_init(void) {
    unsigned b;
    for (b = 0; b < 256; b++) {
        uint64_t row = 0, nx;
        if (b < 0x80) nx = WSN_U_ACC;
        else if (b >= 0xC2 && b <= 0xDF) nx = WSN_U_T1;
        else if (b == 0xE0) nx = WSN_U_E0;
        else if (b == 0xED) nx = WSN_U_ED;
        else if (b >= 0xE1 && b <= 0xEF) nx = WSN_U_T2;
        else if (b == 0xF0) nx = WSN_U_F0;
        else if (b >= 0xF1 && b <= 0xF3) nx = WSN_U_T3;
        else if (b == 0xF4) nx = WSN_U_F4;
        else nx = WSN_U_ERR;
        row |= nx << WSN_U_ACC;
        if (b >= 0x80 && b <= 0xBF) {
            row |= (uint64_t)WSN_U_ACC << WSN_U_T1;
            row |= (uint64_t)WSN_U_T1 << WSN_U_T2;
            row |= (uint64_t)WSN_U_T2 << WSN_U_T3;
        }
        if (b >= 0xA0 && b <= 0xBF) row |= (uint64_t)WSN_U_T1 << WSN_U_E0;
        if (b >= 0x80 && b <= 0x9F) row |= (uint64_t)WSN_U_T1 << WSN_U_ED;
        if (b >= 0x90 && b <= 0xBF) row |= (uint64_t)WSN_U_T2 << WSN_U_F0;
        if (b >= 0x80 && b <= 0x8F) row |= (uint64_t)WSN_U_T2 << WSN_U_F4;
        wsn_utf8_row[b] = row;
    }
}

#define WSN_U_STEP(s, b) ((s) = wsn_utf8_row[(b)] >> ((s) & 63))
#define WSN_U_BLOCK 512

static inline int wsn_ascii16(const uint8_t *p) {
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    return ((a | b) & WSN_HI) == 0;
}

/* Plain DFA run: one dependency chain, one byte per step. */
static uint32_t wsn_utf8_chain(uint64_t s, const uint8_t *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) WSN_U_STEP(s, p[i]);
    return (uint32_t)(s & 63);
}

/* The DFA over p[0:n] (n >= 64) as four independent chains, for text
   dense in multi-byte characters (a single chain is bound by the latency
   of its shift). p is cut at three character boundaries near the
   quarters (bytes that are not continuation bytes); chain 0 starts from
   `state`, the others from ACC. A chain's start state is the true one
   exactly when all chains before it end in ACC; if one does not, the
   non-continuation byte after it makes the input invalid. So: chains
   0-2 must end in ACC, and the result is chain 3's state. */
static uint32_t wsn_utf8_four(uint32_t state, const uint8_t *p, size_t n) {
    size_t cut[5], len[4], m, i, k, j;
    uint64_t s0 = state, s1 = WSN_U_ACC, s2 = WSN_U_ACC, s3 = WSN_U_ACC;
    const uint8_t *p1, *p2, *p3;
    cut[0] = 0;
    cut[4] = n;
    for (k = 1; k < 4; k++) {
        size_t b = (n / 4) * k;
        for (j = 0; j < 3 && (p[b] & 0xC0) == 0x80; j++) b--;
        if ((p[b] & 0xC0) == 0x80) return wsn_utf8_chain(s0, p, n); /* 4 in a row: invalid anyway */
        cut[k] = b;
    }
    m = n;
    for (k = 0; k < 4; k++) {
        len[k] = cut[k + 1] - cut[k];
        if (len[k] < m) m = len[k];
    }
    p1 = p + cut[1];
    p2 = p + cut[2];
    p3 = p + cut[3];
    for (i = 0; i < m; i++) {
        WSN_U_STEP(s0, p[i]);
        WSN_U_STEP(s1, p1[i]);
        WSN_U_STEP(s2, p2[i]);
        WSN_U_STEP(s3, p3[i]);
    }
    if (wsn_utf8_chain(s0, p + m, len[0] - m) != WSN_U_ACC) return WSN_U_ERR;
    if (wsn_utf8_chain(s1, p1 + m, len[1] - m) != WSN_U_ACC) return WSN_U_ERR;
    if (wsn_utf8_chain(s2, p2 + m, len[2] - m) != WSN_U_ACC) return WSN_U_ERR;
    return wsn_utf8_chain(s3, p3 + m, len[3] - m);
}

/* Run the DFA from `state` over p[0:n]; return the new state (WSN_U_ERR
   as soon as the input can no longer be valid). At a character boundary
   ASCII is skipped 16 bytes at a time; where four 16-byte blocks in a
   row hold non-ASCII bytes (text dense in multi-byte characters) the
   next WSN_U_BLOCK bytes go through the four-chain DFA; the rest goes
   one byte per step. */
static uint32_t wsn_utf8_run(uint32_t state, const uint8_t *p, size_t n) {
    uint64_t s = state;
    size_t i = 0;
    while (i < n) {
        size_t end;
        if ((s & 63) == WSN_U_ACC) {
            while (n - i >= 16 && wsn_ascii16(p + i)) i += 16;
        }
        if (n - i >= WSN_U_BLOCK && !wsn_ascii16(p + i + 16) && !wsn_ascii16(p + i + 32)
            && !wsn_ascii16(p + i + 48)) {
            s = wsn_utf8_four((uint32_t)(s & 63), p + i, WSN_U_BLOCK);
            i += WSN_U_BLOCK;
        } else {
            end = (n - i > 16) ? i + 16 : n;
            for (; i < end; i++) WSN_U_STEP(s, p[i]);
        }
        if ((s & 63) == WSN_U_ERR) return WSN_U_ERR;
    }
    return (uint32_t)(s & 63);
}

/* Characters of valid UTF-8 p[0:n] (its bytes that are not continuation
   bytes), and in *maxlead its largest byte, which fixes the kind of the
   str it decodes to: < 0x80 ASCII, < 0xC4 Latin-1 (C2/C3 lead U+0080..
   U+00FF), < 0xF0 two bytes per character, else four. */
static size_t wsn_utf8_count(const uint8_t *p, size_t n, uint8_t *maxlead) {
    size_t i, count = 0;
    uint8_t mx = 0;
    for (i = 0; i < n; i++) {
        count += (p[i] & 0xC0) != 0x80;
        mx = p[i] > mx ? p[i] : mx;
    }
    *maxlead = mx;
    return count;
}

/* Decode valid UTF-8 p[0:n] into code units of type T at `out` (as many
   as wsn_utf8_count counts; T wide enough for the largest). No checks:
   the input must have passed wsn_utf8_run, or this reads past its end.
   ASCII goes 8 bytes at a time. */
#define WSN_UTF8_DECODE(T, out, p, n)                                                                   \
    do {                                                                                                \
        size_t i_ = 0, j_ = 0;                                                                          \
        while (i_ < (n)) {                                                                              \
            uint32_t b_ = (p)[i_];                                                                      \
            if (b_ < 0x80) {                                                                            \
                while ((n) - i_ >= 8) {                                                                 \
                    uint64_t w_;                                                                        \
                    unsigned k_;                                                                        \
                    memcpy(&w_, (p) + i_, 8);                                                           \
                    if (w_ & WSN_HI) break;                                                             \
                    for (k_ = 0; k_ < 8; k_++) (out)[j_ + k_] = (T)(p)[i_ + k_];                        \
                    i_ += 8;                                                                            \
                    j_ += 8;                                                                            \
                }                                                                                       \
                if (i_ < (n) && (p)[i_] < 0x80) (out)[j_++] = (T)(p)[i_++];                             \
            } else if (b_ < 0xE0) {                                                                     \
                (out)[j_++] = (T)(((b_ & 0x1F) << 6) | ((p)[i_ + 1] & 0x3F));                           \
                i_ += 2;                                                                                \
            } else if (b_ < 0xF0) {                                                                     \
                (out)[j_++] = (T)(((b_ & 0x0F) << 12) | (((uint32_t)(p)[i_ + 1] & 0x3F) << 6)           \
                                  | ((p)[i_ + 2] & 0x3F));                                              \
                i_ += 3;                                                                                \
            } else {                                                                                    \
                (out)[j_++] = (T)(((b_ & 0x07) << 18) | (((uint32_t)(p)[i_ + 1] & 0x3F) << 12)          \
                                  | (((uint32_t)(p)[i_ + 2] & 0x3F) << 6) | ((p)[i_ + 3] & 0x3F));      \
                i_ += 4;                                                                                \
            }                                                                                           \
        }                                                                                               \
    } while (0)

static void wsn_utf8_decode1(uint8_t *out, const uint8_t *p, size_t n) { WSN_UTF8_DECODE(uint8_t, out, p, n); }
static void wsn_utf8_decode2(uint16_t *out, const uint8_t *p, size_t n) { WSN_UTF8_DECODE(uint16_t, out, p, n); }
static void wsn_utf8_decode4(uint32_t *out, const uint8_t *p, size_t n) { WSN_UTF8_DECODE(uint32_t, out, p, n); }

/* Frame header: first byte, then the 7-bit length (with the mask bit
   `mbit`) and the 16- or 64-bit extended length. Returns its size. */
static size_t wsn_write_header(uint8_t *h, unsigned first, unsigned mbit, uint64_t len) {
    h[0] = (uint8_t)first;
    if (len < 126) {
        h[1] = (uint8_t)(mbit | len);
        return 2;
    }
    if (len < 65536) {
        h[1] = (uint8_t)(mbit | 126);
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = (uint8_t)(mbit | 127);
    h[2] = (uint8_t)(len >> 56);
    h[3] = (uint8_t)(len >> 48);
    h[4] = (uint8_t)(len >> 40);
    h[5] = (uint8_t)(len >> 32);
    h[6] = (uint8_t)(len >> 24);
    h[7] = (uint8_t)(len >> 16);
    h[8] = (uint8_t)(len >> 8);
    h[9] = (uint8_t)len;
    return 10;
}

static inline size_t wsn_header_size(uint64_t len) {
    return len < 126 ? 2 : (len < 65536 ? 4 : 10);
}

#endif /* WSNEST_KERNELS_H */
