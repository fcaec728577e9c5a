/* libFuzzer harness for the C kernels of the compiled core (src/wsnest/core/_kernels.h).
 *
 * Differential: every kernel is checked against a plain reference written
 * here, one byte at a time, with no tricks:
 *
 *   - wsn_unmask_inplace / wsn_unmask_copy / wsn_unmask_copy_or (8 bytes at a
 *     time, rotated mask word) against out[i] = in[i] ^ mask[(off + i) & 3],
 *     on a buffer of exactly the payload's size at an arbitrary alignment
 *     (so ASan sees any read or write past the end), whole and in pieces
 *     with the mask offset carried across pieces like the parser does;
 *     copy_or's result against the OR of the unmasked bytes;
 *   - wsn_utf8_run (shift-DFA with ASCII skipping and a four-chain path for
 *     dense multi-byte text) fed incrementally at arbitrary split points,
 *     against a reference validator built from the Unicode well-formed byte
 *     sequence table: after every piece the DFA state must be the very state
 *     the reference is in (ACC, one of the partial states, or ERR as soon as
 *     the first byte that cannot continue a valid sequence has been seen);
 *   - wsn_utf8_count / wsn_utf8_decode1/2/4, on input the reference accepts,
 *     against a plain decode one character at a time: the count, the widest
 *     lead byte (which must pick the narrowest kind that holds every code
 *     point) and every code unit, into a buffer of exactly that many units
 *     (so ASan sees a write past the end);
 *   - wsn_write_header / wsn_header_size against a byte-by-byte encoding.
 *
 * Input layout: byte 0 picks the mode and the split seed, bytes 1-4 are the
 * mask, byte 5 the mask offset; the rest is the payload. Some modes turn the
 * payload into valid UTF-8 (mostly multi-byte, long enough for the
 * four-chain path) with at most one corruption, since random bytes almost
 * never reach deep into the DFA.
 *
 * Build: fuzz/build_kernels.sh. Without libFuzzer, -DWSN_STANDALONE adds a
 * main() that replays files and then runs random inputs (see README.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_kernels.h"

#define CHECK(cond, what)                                                            \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "kernels_fuzz: %s (%s:%d)\n", what, __FILE__, __LINE__); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* xorshift64*: split sizes and generated text depend only on the input. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t seed_of(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h ? h : 1;
}

/* Next piece size: often tiny or zero (state carried across calls), sometimes large. */
static size_t piece(uint64_t *s, size_t left) {
    uint64_t r = rng_next(s);
    size_t n;
    switch (r & 3) {
    case 0: n = (size_t)((r >> 8) % 4); break;
    case 1: n = (size_t)((r >> 8) % 24); break;
    case 2: n = (size_t)((r >> 8) % 700); break;
    default: n = left; break;
    }
    return n < left ? n : left;
}

/* A copy of p[0:n] in a fresh allocation that ends exactly after it (with
   `skew` bytes in front, so the kernel sees every alignment): ASan then
   reports a single byte read or written past the end. */
static uint8_t *dup_at(const uint8_t *p, size_t n, unsigned skew, uint8_t **base) {
    *base = malloc(n + skew ? n + skew : 1);
    CHECK(*base != NULL, "malloc");
    memcpy(*base + skew, p, n);
    return *base + skew;
}

/* ---------------------------------------------------------------- masking */

static void check_unmask(const uint8_t *in, size_t n, const uint8_t *mask, unsigned off, uint64_t *rs) {
    uint8_t *ref = malloc(n + 1), *b1, *b2, *b3;
    uint8_t *buf, *dst, *tmp;
    uint8_t want_or = 0, got_or;
    size_t i, pos;
    unsigned skew = (unsigned)(rng_next(rs) & 7);
    CHECK(ref != NULL, "malloc");
    for (i = 0; i < n; i++) {
        ref[i] = in[i] ^ mask[(off + i) & 3];
        want_or |= ref[i];
    }

    buf = dup_at(in, n, skew, &b1); /* whole buffer, in place */
    wsn_unmask_inplace(buf, n, mask, off);
    CHECK(memcmp(buf, ref, n) == 0, "wsn_unmask_inplace differs from the byte loop");
    wsn_unmask_inplace(buf, n, mask, off); /* XOR twice: the input again */
    CHECK(memcmp(buf, in, n) == 0, "wsn_unmask_inplace is not an involution");

    dst = dup_at(ref, n, (skew + 3) & 7, &b2); /* copy, exact-size destination */
    memset(dst, 0xAA, n);
    wsn_unmask_copy(dst, buf, n, mask, off);
    CHECK(memcmp(dst, ref, n) == 0, "wsn_unmask_copy differs from the byte loop");

    memset(dst, 0x55, n);
    got_or = wsn_unmask_copy_or(dst, buf, n, mask, off);
    CHECK(memcmp(dst, ref, n) == 0, "wsn_unmask_copy_or differs from the byte loop");
    CHECK(got_or == want_or, "wsn_unmask_copy_or returns the wrong OR");

    /* In pieces, the mask offset carried on like the parser's mask_pos;
       each piece gets its own exact-size allocations. */
    for (pos = 0; pos < n;) {
        size_t k = piece(rs, n - pos);
        unsigned o = (unsigned)((off + pos) & 3);
        uint8_t *one, *two, *ob1, *ob2;
        if (k == 0) k = 1;
        one = dup_at(in + pos, k, (unsigned)(pos & 7), &ob1);
        two = dup_at(in + pos, k, (unsigned)((pos + 5) & 7), &ob2);
        wsn_unmask_inplace(one, k, mask, o);
        CHECK(memcmp(one, ref + pos, k) == 0, "wsn_unmask_inplace (in pieces) differs");
        tmp = dup_at(in + pos, k, 1, &b3);
        got_or = wsn_unmask_copy_or(two, tmp, k, mask, o);
        CHECK(memcmp(two, ref + pos, k) == 0, "wsn_unmask_copy_or (in pieces) differs");
        {
            uint8_t w = 0;
            for (i = 0; i < k; i++) w |= ref[pos + i];
            CHECK(got_or == w, "wsn_unmask_copy_or (in pieces) returns the wrong OR");
        }
        free(ob1);
        free(ob2);
        free(b3);
        pos += k;
    }
    free(b1);
    free(b2);
    free(ref);
}

/* ------------------------------------------------------------------ UTF-8 */

/* Reference validator: Unicode's table of well-formed byte sequences.
   `need` continuation bytes are still expected; the next one must lie in
   [lo, hi], later ones in [80, BF]. */
typedef struct {
    unsigned need, lo, hi;
    int err;
} ref_utf8;

static void ref_step(ref_utf8 *r, unsigned b) {
    if (r->err) return;
    if (r->need) {
        if (b < r->lo || b > r->hi) {
            r->err = 1;
            return;
        }
        r->need--;
        r->lo = 0x80;
        r->hi = 0xBF;
        return;
    }
    r->lo = 0x80;
    r->hi = 0xBF;
    if (b < 0x80) return;
    if (b >= 0xC2 && b <= 0xDF) r->need = 1;
    else if (b == 0xE0) r->need = 2, r->lo = 0xA0;
    else if (b == 0xED) r->need = 2, r->hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF) r->need = 2;
    else if (b == 0xF0) r->need = 3, r->lo = 0x90;
    else if (b == 0xF4) r->need = 3, r->hi = 0x8F;
    else if (b >= 0xF1 && b <= 0xF3) r->need = 3;
    else r->err = 1;
}

/* The DFA state the reference's position corresponds to. */
static uint32_t ref_state(const ref_utf8 *r) {
    if (r->err) return WSN_U_ERR;
    switch (r->need) {
    case 0: return WSN_U_ACC;
    case 1: return WSN_U_T1;
    case 2: return r->lo == 0xA0 ? WSN_U_E0 : (r->hi == 0x9F ? WSN_U_ED : WSN_U_T2);
    default: return r->lo == 0x90 ? WSN_U_F0 : (r->hi == 0x8F ? WSN_U_F4 : WSN_U_T3);
    }
}

static void check_decode(const uint8_t *p, size_t n);

static void check_utf8(const uint8_t *p, size_t n, uint64_t *rs) {
    ref_utf8 r = {0, 0x80, 0xBF, 0};
    uint32_t s = WSN_U_ACC;
    size_t pos = 0, i;
    while (pos < n || pos == 0) {
        size_t k = piece(rs, n - pos);
        uint8_t *b, *chunk = dup_at(p + pos, k, (unsigned)(rng_next(rs) & 15), &b);
        uint32_t want;
        s = wsn_utf8_run(s, chunk, k);
        free(b);
        for (i = 0; i < k; i++) ref_step(&r, p[pos + i]);
        want = ref_state(&r);
        if (s != want) {
            fprintf(stderr, "kernels_fuzz: UTF-8 DFA state %u, reference %u after byte %zu of %zu\n", (unsigned)s,
                    (unsigned)want, pos + k, n);
            abort();
        }
        pos += k;
        if (n == 0) break;
    }
    /* The whole input in one call agrees too (the four-chain path sees
       the longest runs this way). */
    {
        uint8_t *b, *whole = dup_at(p, n, (unsigned)(rng_next(rs) & 15), &b);
        CHECK(wsn_utf8_run(WSN_U_ACC, whole, n) == ref_state(&r), "UTF-8 DFA in one call differs from the reference");
        if (ref_state(&r) == WSN_U_ACC) check_decode(whole, n);
        free(b);
    }
}

/* For valid UTF-8 p[0:n] (the reference accepts it): the decode kernels
   against a plain decoder. */
static void check_decode(const uint8_t *p, size_t n) {
    uint32_t *want = malloc((n + 1) * sizeof *want), top = 0;
    size_t count = 0, i = 0, k, got;
    uint8_t maxlead;
    CHECK(want != NULL, "malloc");
    while (i < n) {
        uint32_t b = p[i], c;
        size_t len = b < 0x80 ? 1 : (b < 0xE0 ? 2 : (b < 0xF0 ? 3 : 4));
        c = len == 1 ? b : (b & (0x7Fu >> len));
        for (k = 1; k < len; k++) c = c << 6 | (p[i + k] & 0x3Fu);
        want[count++] = c;
        if (c > top) top = c;
        i += len;
    }
    got = wsn_utf8_count(p, n, &maxlead);
    CHECK(got == count, "wsn_utf8_count: wrong number of characters");
    /* The kind the lead byte picks must be the narrowest that holds them all. */
    if (maxlead < 0x80) {
        CHECK(top < 0x80, "wsn_utf8_count: ASCII lead for a wider text");
    } else if (maxlead < 0xC4) {
        CHECK(top >= 0x80 && top < 0x100, "wsn_utf8_count: Latin-1 lead for another text");
        uint8_t *o = malloc(count ? count : 1);
        CHECK(o != NULL, "malloc");
        wsn_utf8_decode1(o, p, n);
        for (k = 0; k < count; k++) CHECK(o[k] == want[k], "wsn_utf8_decode1 differs from the reference");
        free(o);
    } else if (maxlead < 0xF0) {
        CHECK(top >= 0x100 && top < 0x10000, "wsn_utf8_count: 2-byte lead for another text");
        uint16_t *o = malloc(count * sizeof *o);
        CHECK(o != NULL, "malloc");
        wsn_utf8_decode2(o, p, n);
        for (k = 0; k < count; k++) CHECK(o[k] == want[k], "wsn_utf8_decode2 differs from the reference");
        free(o);
    } else {
        CHECK(top >= 0x10000, "wsn_utf8_count: 4-byte lead for a narrower text");
    }
    {   /* the widest decoder holds any valid text */
        uint32_t *o = malloc((count ? count : 1) * sizeof *o);
        CHECK(o != NULL, "malloc");
        wsn_utf8_decode4(o, p, n);
        for (k = 0; k < count; k++) CHECK(o[k] == want[k], "wsn_utf8_decode4 differs from the reference");
        free(o);
    }
    free(want);
}

/* Append code point c as UTF-8 (no checks: the caller picks valid ones). */
static size_t put_cp(uint8_t *o, uint32_t c) {
    if (c < 0x80) return o[0] = (uint8_t)c, 1;
    if (c < 0x800) return o[0] = (uint8_t)(0xC0 | c >> 6), o[1] = (uint8_t)(0x80 | (c & 63)), 2;
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | c >> 12);
        o[1] = (uint8_t)(0x80 | ((c >> 6) & 63));
        o[2] = (uint8_t)(0x80 | (c & 63));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | c >> 18);
    o[1] = (uint8_t)(0x80 | ((c >> 12) & 63));
    o[2] = (uint8_t)(0x80 | ((c >> 6) & 63));
    o[3] = (uint8_t)(0x80 | (c & 63));
    return 4;
}

/* Valid UTF-8 of about `want` bytes from the input's bytes: each byte picks a
   code point class (ASCII runs, 2/3/4-byte characters, the edges E0 A0,
   ED 9F, F0 90, F4 8F, U+FFFF, U+10FFFF). Then maybe one corruption. */
static size_t gen_text(uint8_t *o, size_t want, const uint8_t *p, size_t n, uint64_t *rs) {
    static const uint32_t edges[] = {0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF, 0x3FFFF};
    size_t len = 0, i, k = 0;
    while (len + 4 <= want) {
        unsigned b = n ? p[k++ % n] : (unsigned)rng_next(rs);
        uint32_t c, r = (uint32_t)rng_next(rs);
        switch (b & 7) {
        case 0: c = r & 0x7F; break;
        case 1: c = 0x80 + r % 0x780; break;
        case 2: c = 0x800 + r % 0xD000; break;
        case 3: c = 0xE000 + r % 0x2000; break;
        case 4: c = 0x10000 + r % 0x100000; break;
        case 5: c = edges[(b >> 3) % 10]; break;
        case 6: c = 0x4E00 + r % 0x5000; break; /* CJK: dense 3-byte text */
        default: c = 0x1F600 + r % 0x50; break; /* emoji: 4-byte */
        }
        len += put_cp(o + len, c);
    }
    if (n && (p[0] & 0x40) && len) { /* one corruption at an input-chosen place */
        uint64_t r = rng_next(rs);
        size_t at = (size_t)(r % len);
        static const uint8_t bad[] = {0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFF, 0xE0, 0xED, 0xF0, 0xF4, 0xC2, 0x41};
        o[at] = bad[(r >> 32) % sizeof bad];
        if ((r >> 40) & 1) /* or a run of continuation bytes (the four-chain cut search gives up on 4) */
            for (i = at; i < len && i < at + 1 + ((r >> 41) & 7); i++) o[i] = (uint8_t)(0x80 | ((r >> 44) & 63));
    }
    return len;
}

/* --------------------------------------------------------------- headers */

static void check_header(const uint8_t *p, size_t n) {
    uint8_t h[10], want[10];
    uint64_t len = 0;
    size_t i, got, wn;
    unsigned first, mbit;
    if (n < 10) return;
    first = p[0];
    mbit = p[1] & 0x80;
    for (i = 2; i < 10; i++) len = len << 8 | p[i];
    len >>= p[1] & 63; /* reach the small and 16-bit lengths too */
    want[0] = (uint8_t)first;
    if (len < 126) {
        want[1] = (uint8_t)(mbit | len);
        wn = 2;
    } else if (len < 65536) {
        want[1] = (uint8_t)(mbit | 126);
        want[2] = (uint8_t)(len >> 8);
        want[3] = (uint8_t)(len & 0xFF);
        wn = 4;
    } else {
        want[1] = (uint8_t)(mbit | 127);
        for (i = 0; i < 8; i++) want[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        wn = 10;
    }
    got = wsn_write_header(h, first, mbit, len);
    CHECK(got == wn && memcmp(h, want, wn) == 0, "wsn_write_header differs from the byte encoding");
    CHECK(wsn_header_size(len) == wn, "wsn_header_size differs from wsn_write_header");
}

/* ----------------------------------------------------------------- entry */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready = 0;
    uint64_t rs;
    const uint8_t *mask, *payload;
    size_t n;
    unsigned off;
    if (!ready) {
        wsn_utf8_init();
        ready = 1;
    }
    if (size < 6) return 0;
    rs = seed_of(data, size);
    mask = data + 1;
    off = data[5] & 3;
    payload = data + 6;
    n = size - 6;
    switch (data[0] & 3) {
    case 0: /* masking on the raw payload */
        check_unmask(payload, n, mask, off, &rs);
        check_header(payload, n);
        break;
    case 1: /* the DFA on the raw payload (and on its unmasked form) */
        check_utf8(payload, n, &rs);
        {
            uint8_t *ub, *u = dup_at(payload, n, 0, &ub);
            wsn_unmask_inplace(u, n, mask, off);
            check_utf8(u, n, &rs);
            free(ub);
        }
        break;
    default: { /* the DFA on generated text, long enough for the four-chain path */
        size_t want = 64 + (size_t)(data[5] >> 2) * 40 + (n & 1023);
        uint8_t *t = malloc(want + 4);
        size_t len;
        CHECK(t != NULL, "malloc");
        len = gen_text(t, want, payload, n, &rs);
        check_utf8(t, len, &rs);
        check_unmask(t, len, mask, off, &rs);
        free(t);
        break;
    }
    }
    return 0;
}

#ifdef WSN_STANDALONE
/* Without libFuzzer: replay the files given, then random inputs for
   WSN_SECONDS (default 60) seconds. No coverage guidance. */
#include <time.h>

int main(int argc, char **argv) {
    uint8_t buf[1 << 16];
    uint64_t rs = (uint64_t)time(NULL) | 1, runs = 0;
    const char *env = getenv("WSN_SECONDS");
    time_t end = time(NULL) + (env ? atol(env) : 60);
    int i;
    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        size_t n;
        if (!f) continue;
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    while (time(NULL) < end) {
        size_t n = (size_t)(rng_next(&rs) % 2048), k;
        for (k = 0; k < n; k++) buf[k] = (uint8_t)rng_next(&rs);
        LLVMFuzzerTestOneInput(buf, n);
        runs++;
    }
    printf("kernels_fuzz (standalone): %llu inputs, no failure\n", (unsigned long long)runs);
    return 0;
}
#endif
