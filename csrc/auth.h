/*
 * auth.h - request signing shared by the HTTP client (httpc.c) and the broker
 * (httpd.c). See docs/API.md "Authentication".
 *
 * The key is derived once per process from the password (a slow KDF); each
 * request is signed with HMAC-SHA256 over method, path+query, time, nonce and
 * the body's SHA-256, so the password never crosses the wire.
 */
#ifndef PRPC_AUTH_H
#define PRPC_AUTH_H

#include "common.h"

#define PRPC_AUTH_KEY_LEN 32
#define PRPC_AUTH_SIG_HEX 65   /* 64 hex + NUL */
#define PRPC_AUTH_NONCE_HEX 33 /* 32 hex + NUL */
#define PRPC_AUTH_WINDOW_MS (5 * 60 * 1000)
#define PRPC_AUTH_KDF_ITERATIONS 200000

/* Derive the network key from a password. Slow on purpose (PBKDF2, many
 * iterations): call once at start. Returns 0 or PRPC_EINVAL (empty password). */
int prpc_auth_derive_key(const char *password, size_t len, uint8_t key[PRPC_AUTH_KEY_LEN],
                         prpc_error_t *err);

/* Sign one request. body_sha256_hex is the hex SHA-256 of the exact body bytes
 * (of the empty string when there is none). Writes sig_hex (64 hex + NUL). */
void prpc_auth_sign(const uint8_t key[PRPC_AUTH_KEY_LEN], const char *method,
                    const char *path_and_query, int64_t time_ms, const char *nonce_hex,
                    const char *body_sha256_hex, char sig_hex[PRPC_AUTH_SIG_HEX]);

/* Fill nonce_hex with 32 random hex chars from a CSPRNG. Returns 0 or PRPC_EIO. */
int prpc_auth_nonce(char nonce_hex[PRPC_AUTH_NONCE_HEX], prpc_error_t *err);

/* Check a request's signature and time window, comparing in constant time.
 * Returns 0, or PRPC_EAUTH with a reason that leaks nothing secret. */
int prpc_auth_verify(const uint8_t key[PRPC_AUTH_KEY_LEN], const char *method,
                     const char *path_and_query, const char *time_str, const char *nonce_hex,
                     const char *body_sha256_hex, const char *sig_hex, int64_t now_ms,
                     prpc_error_t *err);

/* Sign a response: HMAC over "RESPONSE", the status, the request's nonce and
 * the body's SHA-256, so a client knows the answer came from a broker that
 * knows the password and belongs to its own request. */
void prpc_auth_sign_response(const uint8_t key[PRPC_AUTH_KEY_LEN], int status,
                             const char *request_nonce_hex, const char *body_sha256_hex,
                             char sig_hex[PRPC_AUTH_SIG_HEX]);

/* The nonces seen inside the time window, to refuse a replayed request.
 * Memory is bounded by max_entries; when full of live nonces, new requests are
 * refused (PRPC_ELIMIT) rather than risking a replay.
 * Thread safety: one thread at a time (the broker's loop thread). */
typedef struct prpc_nonce_cache prpc_nonce_cache_t;

prpc_nonce_cache_t *prpc_nonce_cache_new(size_t max_entries, prpc_error_t *err);
void prpc_nonce_cache_free(prpc_nonce_cache_t *c); /* accepts NULL */

/* Remember nonce_hex (32 hex) until request_time_ms + PRPC_AUTH_WINDOW_MS.
 * Returns 0 when it is new, PRPC_EAUTH when it was seen before (a replay),
 * PRPC_ELIMIT when the cache is full of live nonces. */
int prpc_nonce_cache_add(prpc_nonce_cache_t *c, const char *nonce_hex, int64_t request_time_ms,
                         int64_t now_ms, prpc_error_t *err);

#ifdef PRPC_UNITTEST
/* Live entries. For tests/c and tests/fuzz only (built with -DPRPC_UNITTEST): the engine
 * never calls it, so the extension does not carry it. */
size_t prpc_nonce_cache_size(const prpc_nonce_cache_t *c);
#endif

#endif
