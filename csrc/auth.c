/*
 * auth.c - the network key and request signatures (auth.h).
 *
 * Thread safety: every function is reentrant; the key is read-only after it
 * was derived.
 */
#include "auth.h"
#include "hash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char KDF_SALT[] = "p2prpc.v1";

int64_t prpc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
