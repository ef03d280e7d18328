/*
 * fuzz_auth.c - libFuzzer target: request signatures (prpc_auth_verify) and
 * the replay cache (prpc_nonce_cache_add).
 *
 * Input: a mode byte, then fields separated by '\n': method, path?query,
 * time, nonce, body sha256 hex, signature, and a tail of nonce-cache records.
 * A missing field is passed as NULL (the header was absent).
 *  mode % 3 == 0: the fields as they are. Verify must refuse (EAUTH) unless
 *    the signature is the true HMAC of those fields and the time is in the
 *    window; a fuzzer cannot forge one.
 *  mode % 3 == 1: the harness signs the fields itself: verify must accept
 *    exactly when the time is a decimal inside the window and the nonce has
 *    32 characters.
 *  mode % 3 == 2: signed, then one covered field is changed: always refused.
 * The tail: 4-byte records [nonce hi, nonce lo, request dt, clock step] added
 * to a fresh nonce cache, compared with a model: a nonce seen inside its
 * window is a replay (EAUTH), more live nonces than the cap is ELIMIT, the
 * size never drops below the live count.
 */
#include "fuzz_util.h"
#include "auth.h"
#include "hash.h"
#include "util.h"
#include "wire.h"

#include <stdint.h>

#define NOW_MS 1700000000000LL
#define FIELDS 7
#define CACHE_MIN 512 /* prpc_nonce_cache_new raises smaller caps to this */

static const uint8_t KEY[PRPC_AUTH_KEY_LEN] = "0123456789abcdef0123456789abcde";

typedef struct entry {
    uint16_t id;
    int64_t expires;
} entry_t;

static void check_refused(int rc, const prpc_error_t *err, const char *why)
{
    FUZZ_CHECK(rc == PRPC_EAUTH && err->code == PRPC_EAUTH &&
                   strncmp(err->message, "authentication", 14) == 0,
               "%s: got %d \"%s\"", why, rc, err->message);
}

/* Is time_str what the verifier accepts as a time inside the window? */
static int time_ok(const char *s)
{
    char *end = NULL;
    long long t;
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return 0;
    t = strtoll(s, &end, 10);
    return *end == '\0' && t >= NOW_MS - PRPC_AUTH_WINDOW_MS && t <= NOW_MS + PRPC_AUTH_WINDOW_MS;
}

static void nonce_records(const uint8_t *p, size_t n)
{
    static entry_t model[4096];
    size_t nmodel = 0;
    prpc_error_t err;
    prpc_nonce_cache_t *c = prpc_nonce_cache_new(1, &err);
    int64_t now = NOW_MS;
    FUZZ_CHECK(c != NULL, "%s", err.message);
    for (size_t i = 0; i + 4 <= n && nmodel < 4096; i += 4) {
        uint16_t id = (uint16_t)(p[i] << 8 | p[i + 1]);
        int64_t t = now + (int64_t)(int8_t)p[i + 2] * 5000;
        char hex[33];
        size_t live = 0;
        int replay = 0, want, rc;
        now += (int64_t)p[i + 3] * 2000;
        /* The nonce: 16 bytes, the id in the first two, fixed after. */
        snprintf(hex, sizeof(hex), "%04x%s", id, id == 0xffff ? "zzzzzzzzzzzzzzzzzzzzzzzzzzzz"
                                                                : "0000000000000000000000000000");
        for (size_t j = 0; j < nmodel; j++) {
            if (model[j].expires > now) {
                live++;
                replay |= model[j].id == id;
            }
        }
        if (id == 0xffff)
            want = PRPC_EAUTH; /* malformed */
        else if (replay)
            want = PRPC_EAUTH;
        else if (live + 1 > CACHE_MIN)
            want = PRPC_ELIMIT;
        else
            want = 0;
        rc = prpc_nonce_cache_add(c, hex, t, now, &err);
        FUZZ_CHECK(rc == want, "nonce %s at %lld (now %lld): got %d (%s), model %d (live %zu)",
                   hex, (long long)t, (long long)now, rc, rc ? err.message : "", want, live);
        if (rc != 0)
            FUZZ_CHECK(err.code == rc && err.message[0] != '\0', "error without a message");
        if (rc == 0) {
            model[nmodel].id = id;
            model[nmodel].expires = t + PRPC_AUTH_WINDOW_MS;
            nmodel++;
            live++;
        }
        FUZZ_CHECK(prpc_nonce_cache_size(c) >= live, "size %zu below %zu live nonces",
                   prpc_nonce_cache_size(c), live);
    }
    prpc_nonce_cache_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf, *f[FIELDS] = {NULL}, sig[PRPC_AUTH_SIG_HEX], want_sig[PRPC_AUTH_SIG_HEX];
    const char *tail = NULL;
    size_t nf = 0, tail_len = 0;
    prpc_error_t err;
    uint8_t mode;
    int rc;

    if (size < 1)
        return 0;
    mode = data[0];
    buf = malloc(size);
    FUZZ_CHECK(buf != NULL, "out of memory");
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    /* Split at '\n' into the six text fields; the rest is the records' tail
     * (binary, so it is measured from the input, not as a string). */
    {
        char *p = buf, *end = buf + size - 1;
        while (nf < FIELDS - 1 && p <= end) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            f[nf++] = p;
            if (nl == NULL) {
                p = end + 1;
                break;
            }
            *nl = '\0';
            p = nl + 1;
        }
        if (p < end) {
            tail = (const char *)data + 1 + (p - buf);
            tail_len = (size_t)(end - p);
        }
    }

    if (mode % 3 == 0) {
        rc = prpc_auth_verify(KEY, f[0], f[1], f[2], f[3], f[4], f[5], NOW_MS, &err);
        if (rc == 0) {
            FUZZ_CHECK(time_ok(f[2]), "accepted time %s", f[2]);
            prpc_auth_sign(KEY, f[0], f[1], strtoll(f[2], NULL, 10), f[3], f[4], want_sig);
            FUZZ_CHECK(strcmp(want_sig, f[5]) == 0, "accepted a forged signature %s", f[5]);
        } else {
            check_refused(rc, &err, "raw fields");
        }
    } else if (f[0] && f[1] && f[2] && f[3] && f[4]) {
        int64_t t = strtoll(f[2], NULL, 10);
        int ok = time_ok(f[2]) && strlen(f[3]) == 32;
        prpc_auth_sign(KEY, f[0], f[1], t, f[3], f[4], sig);
        FUZZ_CHECK(prpc_valid_hex(sig, 64), "signature %s", sig);
        if (mode % 3 == 1) {
            rc = prpc_auth_verify(KEY, f[0], f[1], f[2], f[3], f[4], sig, NOW_MS, &err);
            FUZZ_CHECK((rc == 0) == ok, "signed request: got %d (%s), expected %s", rc,
                       rc ? err.message : "", ok ? "accepted" : "refused");
            if (rc != 0)
                check_refused(rc, &err, "signed");
        } else {
            /* Change one covered field; the result must differ from the signed one. */
            char *alt = malloc(strlen(f[(mode / 3) % 5]) + 2);
            const char *g[5] = {f[0], f[1], f[2], f[3], f[4]};
            size_t which = (mode / 3) % 5;
            FUZZ_CHECK(alt != NULL, "out of memory");
            sprintf(alt, "%s", g[which]);
            if (alt[0] == '\0')
                strcpy(alt, "9");
            else if (which == 2) /* another time: its last character changed */
                alt[strlen(alt) - 1] = alt[strlen(alt) - 1] == '9' ? '8' : '9';
            else
                alt[0] = alt[0] == 'a' ? 'b' : 'a';
            g[which] = alt;
            rc = prpc_auth_verify(KEY, g[0], g[1], g[2], g[3], g[4], sig, NOW_MS, &err);
            if (strcmp(alt, f[which]) != 0)
                check_refused(rc, &err, "tampered");
            free(alt);
        }
    }
    if (tail != NULL)
        nonce_records((const uint8_t *)tail, tail_len);
    free(buf);
    return 0;
}
