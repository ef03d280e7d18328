/*
 * auth.c - the network key and request signatures (auth.h).
 *
 * Thread safety: every function is reentrant; the key is read-only after it
 * was derived.
 */
#include "auth.h"
#include "hash.h"
#include "util.h"

#include <openssl/crypto.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char KDF_SALT[] = "p2prpc.v1";

int prpc_auth_derive_key(const char *password, size_t len, uint8_t key[PRPC_AUTH_KEY_LEN],
                         prpc_error_t *err)
{
    if (password == NULL || len == 0)
        return prpc_error_set(err, PRPC_EINVAL, "the password is empty");
    if (PKCS5_PBKDF2_HMAC(password, (int)len, (const unsigned char *)KDF_SALT,
                          (int)strlen(KDF_SALT), PRPC_AUTH_KDF_ITERATIONS, EVP_sha256(),
                          PRPC_AUTH_KEY_LEN, key) != 1)
        return prpc_error_set(err, PRPC_EIO, "deriving the network key failed (PBKDF2)");
    return 0;
}

void prpc_auth_sign(const uint8_t key[PRPC_AUTH_KEY_LEN], const char *method,
                    const char *path_and_query, int64_t time_ms, const char *nonce_hex,
                    const char *body_sha256_hex, char sig_hex[PRPC_AUTH_SIG_HEX])
{
    uint8_t mac[32];
    char time_str[24];
    EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = alg ? EVP_MAC_CTX_new(alg) : NULL;
    OSSL_PARAM params[2];
    size_t outl = 0;

    snprintf(time_str, sizeof(time_str), "%lld", (long long)time_ms);
    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx == NULL || EVP_MAC_init(ctx, key, PRPC_AUTH_KEY_LEN, params) != 1) {
        /* An unusable signature never verifies; the peer answers 401. */
        memset(sig_hex, '0', 64);
        sig_hex[64] = '\0';
        goto out;
    }
    EVP_MAC_update(ctx, (const unsigned char *)method, strlen(method));
    EVP_MAC_update(ctx, (const unsigned char *)"\n", 1);
    EVP_MAC_update(ctx, (const unsigned char *)path_and_query, strlen(path_and_query));
    EVP_MAC_update(ctx, (const unsigned char *)"\n", 1);
    EVP_MAC_update(ctx, (const unsigned char *)time_str, strlen(time_str));
    EVP_MAC_update(ctx, (const unsigned char *)"\n", 1);
    EVP_MAC_update(ctx, (const unsigned char *)nonce_hex, strlen(nonce_hex));
    EVP_MAC_update(ctx, (const unsigned char *)"\n", 1);
    EVP_MAC_update(ctx, (const unsigned char *)body_sha256_hex, strlen(body_sha256_hex));
    EVP_MAC_final(ctx, mac, &outl, sizeof(mac));
    prpc_hex_encode(mac, outl, sig_hex);
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(alg);
}

int prpc_auth_nonce(char nonce_hex[PRPC_AUTH_NONCE_HEX], prpc_error_t *err)
{
    uint8_t r[16];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return prpc_error_set(err, PRPC_EIO, "the system random generator failed");
    prpc_hex_encode(r, sizeof(r), nonce_hex);
    return 0;
}

int prpc_auth_verify(const uint8_t key[PRPC_AUTH_KEY_LEN], const char *method,
                     const char *path_and_query, const char *time_str, const char *nonce_hex,
                     const char *body_sha256_hex, const char *sig_hex, int64_t now_ms,
                     prpc_error_t *err)
{
    char want[PRPC_AUTH_SIG_HEX];
    char *end = NULL;
    long long t;

    if (method == NULL || path_and_query == NULL || body_sha256_hex == NULL)
        return prpc_error_set(err, PRPC_EAUTH, "authentication failed: malformed request");
    if (time_str == NULL || nonce_hex == NULL || sig_hex == NULL)
        return prpc_error_set(err, PRPC_EAUTH,
                              "authentication required: the request is not signed");
    t = strtoll(time_str, &end, 10);
    if (end == time_str || *end != '\0' || time_str[0] < '0' || time_str[0] > '9')
        return prpc_error_set(err, PRPC_EAUTH, "authentication failed: malformed timestamp");
    if (t < now_ms - PRPC_AUTH_WINDOW_MS || t > now_ms + PRPC_AUTH_WINDOW_MS)
        return prpc_error_set(err, PRPC_EAUTH,
                              "authentication failed: timestamp outside the allowed window "
                              "(check the clocks)");
    if (strlen(nonce_hex) != 32 || strlen(sig_hex) != 64)
        return prpc_error_set(err, PRPC_EAUTH, "authentication failed: malformed signature");
    prpc_auth_sign(key, method, path_and_query, (int64_t)t, nonce_hex, body_sha256_hex, want);
    if (CRYPTO_memcmp(want, sig_hex, 64) != 0)
        return prpc_error_set(err, PRPC_EAUTH,
                              "authentication failed: wrong password or tampered request");
    return 0;
}

void prpc_auth_sign_response(const uint8_t key[PRPC_AUTH_KEY_LEN], int status,
                             const char *request_nonce_hex, const char *body_sha256_hex,
                             char sig_hex[PRPC_AUTH_SIG_HEX])
{
    char status_str[16];
    snprintf(status_str, sizeof(status_str), "%d", status);
    /* The same MAC as a request, over a method no request can have. */
    prpc_auth_sign(key, "RESPONSE", status_str, 0, request_nonce_hex, body_sha256_hex, sig_hex);
}

/* ---- the nonce cache: open addressing, linear probing ------------------ */

typedef struct nonce_slot {
    uint8_t nonce[16];
    int64_t expires_ms; /* 0: empty */
} nonce_slot_t;

struct prpc_nonce_cache {
    nonce_slot_t *slots;
    size_t cap;  /* power of two */
    size_t used; /* slots with expires_ms != 0 (live or not yet purged) */
    size_t max_entries;
};

#define NONCE_CACHE_MIN 1024

prpc_nonce_cache_t *prpc_nonce_cache_new(size_t max_entries, prpc_error_t *err)
{
    prpc_nonce_cache_t *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        c->cap = NONCE_CACHE_MIN;
        c->slots = calloc(c->cap, sizeof(*c->slots));
    }
    if (c == NULL || c->slots == NULL) {
        free(c);
        prpc_error_set(err, PRPC_ENOMEM, "out of memory for the nonce cache");
        return NULL;
    }
    c->max_entries = max_entries < NONCE_CACHE_MIN / 2 ? NONCE_CACHE_MIN / 2 : max_entries;
    return c;
}

void prpc_nonce_cache_free(prpc_nonce_cache_t *c)
{
    if (c == NULL)
        return;
    free(c->slots);
    free(c);
}

#ifdef PRPC_UNITTEST
size_t prpc_nonce_cache_size(const prpc_nonce_cache_t *c)
{
    return c->used;
}
#endif

static size_t nonce_hash(const uint8_t nonce[16])
{
    uint64_t h;
    /* Nonces are random: their first bytes are already a good hash. */
    memcpy(&h, nonce, sizeof(h));
    return (size_t)h;
}

static void nonce_insert(nonce_slot_t *slots, size_t cap, const nonce_slot_t *e)
{
    size_t i = nonce_hash(e->nonce) & (cap - 1);
    while (slots[i].expires_ms != 0)
        i = (i + 1) & (cap - 1);
    slots[i] = *e;
}

/* Rebuild into a table of new_cap slots, dropping expired entries. */
static int nonce_rebuild(prpc_nonce_cache_t *c, size_t new_cap, int64_t now_ms)
{
    nonce_slot_t *slots = calloc(new_cap, sizeof(*slots));
    size_t used = 0;
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < c->cap; i++) {
        if (c->slots[i].expires_ms > now_ms) {
            nonce_insert(slots, new_cap, &c->slots[i]);
            used++;
        }
    }
    free(c->slots);
    c->slots = slots;
    c->cap = new_cap;
    c->used = used;
    return 0;
}

int prpc_nonce_cache_add(prpc_nonce_cache_t *c, const char *nonce_hex, int64_t request_time_ms,
                         int64_t now_ms, prpc_error_t *err)
{
    nonce_slot_t e;
    size_t i;
    if (nonce_hex == NULL || prpc_hex_decode(nonce_hex, 32, e.nonce, 16, NULL) != 0)
        return prpc_error_set(err, PRPC_EAUTH, "authentication failed: malformed nonce");
    e.expires_ms = request_time_ms + PRPC_AUTH_WINDOW_MS;
    if (e.expires_ms <= 0)
        e.expires_ms = 1;
    for (i = nonce_hash(e.nonce) & (c->cap - 1); c->slots[i].expires_ms != 0;
         i = (i + 1) & (c->cap - 1)) {
        if (memcmp(c->slots[i].nonce, e.nonce, 16) == 0 && c->slots[i].expires_ms > now_ms)
            return prpc_error_set(err, PRPC_EAUTH,
                                  "authentication failed: this request was already received "
                                  "(replayed nonce)");
    }
    if ((c->used + 1) * 2 > c->cap || c->used + 1 > c->max_entries) {
        size_t new_cap = c->cap;
        /* Purge first; grow only if live entries still fill half the table. */
        if (nonce_rebuild(c, c->cap, now_ms) != 0)
            return prpc_error_set(err, PRPC_ENOMEM, "out of memory for the nonce cache");
        if (c->used + 1 > c->max_entries)
            return prpc_error_set(err, PRPC_ELIMIT,
                                  "too many requests inside the replay window (%zu); retry later",
                                  c->used);
        while ((c->used + 1) * 2 > new_cap)
            new_cap *= 2;
        if (new_cap != c->cap && nonce_rebuild(c, new_cap, now_ms) != 0)
            return prpc_error_set(err, PRPC_ENOMEM, "out of memory for the nonce cache");
    }
    nonce_insert(c->slots, c->cap, &e);
    c->used++;
    return 0;
}
