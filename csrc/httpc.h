/*
 * httpc.h - the client side of the wire (docs/API.md): one persistent libcurl
 * easy handle bound to one broker, plus blob upload and download on top of it.
 * Used by the client (through the Python binding) and by the worker loop.
 *
 * A handle keeps its connection open between requests (HTTP/1.1 keep-alive,
 * also over TLS), so a node talks to a broker over one connection per handle.
 *
 * Signed answers: when the handle has a key, every request is signed as
 * docs/API.md "Authentication" says (the password never reaches this layer),
 * and every answer that carries JSON must carry X-P2PRPC-Signature, the
 * broker's HMAC over the status, THIS request's nonce and the body. An answer
 * without it, with a wrong one, or with one made for another request (a
 * replayed answer) is PRPC_EAUTH "the broker's answer is not signed by a
 * holder of the password (...)" and its status and body are never used. This
 * covers prpc_httpc_request and the blob PUT, commit and error answers. Not
 * covered, because the broker does not sign them: a blob's bytes (a 200/206
 * GET answer; verified by their SHA-256 instead) and HEAD answers (a forged
 * "held" or X-P2PRPC-Partial can only make an upload skip or resume at the
 * wrong offset; the commit, whose answer is signed, still hashes the whole
 * content, so the worst outcome is an error, never wrong data). A 401 is not
 * checked: a broker that refuses our signature cannot be expected to sign
 * with our key; it is PRPC_EAUTH with the broker's words.
 *
 * TLS: an https:// base URL is verified against the system's certificate
 * store, or only against the CA file given to prpc_httpc_set_ca. The peer's
 * certificate and its host name are always checked; nothing turns that off.
 * A certificate that does not verify is PRPC_ECONN naming "certificate verify
 * failed": that broker is unreachable for us, like one that refuses the
 * connection, and a client with other brokers moves on to them.
 *
 * Errors: transport failures are PRPC_ECONN (refused, unreachable, reset, TLS
 * failures; the message names the URL) or PRPC_ETIMEDOUT. An HTTP status is
 * not an error of prpc_httpc_request(): the caller reads it, except 401, which
 * is PRPC_EAUTH carrying the broker's message. The blob functions turn every
 * status they do not expect into the engine code the broker named
 * (prpc_httpc_status_error).
 *
 * Thread safety: a handle is used by one thread at a time (libcurl's rule for
 * an easy handle); distinct handles may run concurrently. curl_global_init()
 * must have run once before the first handle is made (the Python module does
 * it at import; C tests call it in main).
 */
#ifndef PRPC_HTTPC_H
#define PRPC_HTTPC_H

#include "blob.h"
#include "common.h"
#include "hash.h"

#include <stdatomic.h>

#define PRPC_HTTPC_MAX_BODY (4u * 1024 * 1024) /* largest metadata answer kept, bytes */
#define PRPC_HTTPC_URL_MAX 512                  /* longest base URL */
#define PRPC_HTTPC_STALL_BYTES 1024             /* a blob transfer slower than this... */
#define PRPC_HTTPC_STALL_S 30                   /* ...for this many seconds is dropped */
#define PRPC_HTTPC_UPLOAD_RESYNCS 3 /* times an upload re-asks the broker's offset */
#define PRPC_HTTPC_CA_PATH_MAX 4096 /* longest CA file path */

typedef struct prpc_httpc prpc_httpc_t;

/* A handle bound to base_url: "http://host:port", "https://host:port" or a
 * bare "host:port" line as in discovery.txt (http is assumed); surrounding
 * blanks and a trailing '/' are dropped; any other path is PRPC_EINVAL.
 * key (PRPC_AUTH_KEY_LEN bytes, copied) may be NULL for an open network.
 * connect_timeout_ms <= 0 means 5000. Returns NULL with err filled
 * (PRPC_EINVAL naming the URL, PRPC_ENOMEM). */
prpc_httpc_t *prpc_httpc_new(const char *base_url, const uint8_t *key, int connect_timeout_ms,
                             prpc_error_t *err);

/* Trust only the certificate authorities in ca_path (a PEM file holding one
 * or more certificates; the path is copied, the file read again when a
 * connection is made) for an https:// broker, instead of the system store.
 * NULL (or "") goes back to the system store. The file is checked now: it
 * must open and hold at least one PEM certificate. Has no effect on http://.
 * Returns 0, or PRPC_EINVAL naming the file (it cannot be opened, holds no
 * certificate, or its path is over PRPC_HTTPC_CA_PATH_MAX), PRPC_ENOMEM; h
 * keeps its previous CA on error. */
int prpc_httpc_set_ca(prpc_httpc_t *h, const char *ca_path, prpc_error_t *err);

/* Close the connection and free the handle; NULL is fine. */
void prpc_httpc_free(prpc_httpc_t *h);

/* The normalised base URL ("http://host:port" or "https://host:port");
 * valid as long as h. */
const char *prpc_httpc_base_url(const prpc_httpc_t *h);

/* While *flag (may be NULL to clear) is non-zero, requests on h stop within
 * about a second with PRPC_ESTATE ("cancelled"). Used to end long-polls when
 * a worker stops; the flag is read from the thread using h and may be set
 * from any thread. The pointer is borrowed until it is cleared or h freed. */
void prpc_httpc_set_cancel(prpc_httpc_t *h, const atomic_int *flag);

/* One request. path_and_query starts with '/' and is sent (and signed) as
 * given. body may be NULL (body_len 0); a non-empty body is sent as JSON.
 * timeout_ms caps the whole exchange (<= 0: no cap; long-polls pass their
 * wait plus a margin). On return 0, *status is the HTTP status and
 * *resp_body (may be NULL: the body is dropped) a malloc'd, NUL-terminated
 * copy of the answer, *resp_len (may be NULL) its length; the caller frees
 * it. On error *resp_body is NULL.
 * Errors: PRPC_ECONN, PRPC_ETIMEDOUT, PRPC_ELIMIT (answer over
 * PRPC_HTTPC_MAX_BODY), PRPC_EAUTH (a 401, *status is set too; or, with a
 * key, an answer not signed for this request, *status is 0), PRPC_ESTATE
 * (cancelled), PRPC_EINVAL (bad method or path; an unusable CA file),
 * PRPC_ENOMEM. */
int prpc_httpc_request(prpc_httpc_t *h, const char *method, const char *path_and_query,
                       const char *body, size_t body_len, int timeout_ms, long *status,
                       char **resp_body, size_t *resp_len, prpc_error_t *err);

/* Map a non-2xx answer to an engine code: the broker's
 * {"error": {"code", "message"}} when it parses (the message is kept, prefixed
 * by what), else PRPC_EPROTO naming the status. Returns the code. */
int prpc_httpc_status_error(long status, const char *body, size_t len, const char *what,
                            prpc_error_t *err);

/* The retry policy of every request a node repeats (all of docs/API.md's
 * requests but restart are safe to repeat), for the worker here and the
 * client through _core:
 *  - prpc_httpc_retryable_status: 1 for an answer that says the broker
 *    failed rather than refused (500, 502, 503, 504); another try may meet
 *    a broker that works. Any other status is the broker's word, final.
 *  - prpc_httpc_backoff_ms: the wait before try attempt+1 after attempt
 *    failures in a row: first_ms doubled per failure up to max_ms, drawn in
 *    its upper half by u in [0, 1), so nodes that failed together do not
 *    come back together. */
int prpc_httpc_retryable_status(long status);
int64_t prpc_httpc_backoff_ms(int attempt, int64_t first_ms, int64_t max_ms, double u);

/* Make the broker hold blob sha_hex (64 lowercase hex) whose content is the
 * first `size` bytes of fd. Asks first (HEAD): a blob the broker already holds
 * is not sent again, a partial one resumes where the broker's copy ends; then
 * PUTs chunks of at most PRPC_BLOB_CHUNK bytes, each read with pread (the fd's
 * position is untouched) and carrying its own SHA-256, then commits. Holds at
 * most one chunk in memory. A chunk the broker refuses as corrupt (damaged
 * in flight) is sent again from the broker's partial, at most 5 times.
 * Blocks: call without the GIL.
 * Errors: transport and signature codes as prpc_httpc_request; PRPC_EIO
 * when fd cannot be read; PRPC_EINVAL when it is shorter than size (the file
 * changed since it was hashed); PRPC_ECORRUPT naming the
 * blob and the chunk's offset after 5 refusals in a row, or when the broker
 * finds the content does not hash to sha_hex; other broker refusals by their
 * code. */
int prpc_httpc_upload_blob(prpc_httpc_t *h, int fd, const char *sha_hex, uint64_t size,
                           prpc_error_t *err);

/* As prpc_httpc_upload_blob, but returns once the broker has synced at least
 * `until` bytes of a blob it does not yet hold whole (*complete = 0, nothing
 * committed): a call naming the blob can then be submitted while a second
 * call of this function, resuming from the broker's copy, sends the rest.
 * *complete = 1 when the broker holds the blob (uploaded and committed, or
 * held before). `complete` may be NULL only with until = UINT64_MAX. */
int prpc_httpc_upload_blob_until(prpc_httpc_t *h, int fd, const char *sha_hex, uint64_t size,
                                 uint64_t until, int *complete, prpc_error_t *err);

/* As prpc_httpc_upload_blob_until, with cd (may be NULL) the digests of the
 * file's PRPC_BLOB_UPLOAD_CHUNK pieces from prpc_hash_fd_chunks: chunks are
 * then not hashed again as they are read. cd is borrowed for the call. */
int prpc_httpc_upload_blob_hashed(prpc_httpc_t *h, int fd, const char *sha_hex, uint64_t size,
                                  uint64_t until, int *complete, const prpc_chunk_digests_t *cd,
                                  prpc_error_t *err);

/* Make bd hold blob sha_hex, fetched from the broker when it is not there
 * already: streamed to bd's partial file (resuming with Range after what a
 * previous attempt left), fsynced, then committed, which verifies the hash.
 * A corrupt result is dropped and fetched again from zero, at most 5 tries in
 * all. Memory stays bounded by libcurl's buffer whatever the blob's size.
 * Errors: transport and signature codes as prpc_httpc_request;
 * PRPC_ENOTFOUND when the broker does not hold it; PRPC_ECORRUPT when every
 * try failed the hash (nothing is kept); PRPC_EIO / PRPC_ENOSPC writing bd. */
int prpc_httpc_download_blob(prpc_httpc_t *h, const char *sha_hex, prpc_blobdir_t *bd,
                             prpc_error_t *err);

/* As prpc_httpc_download_blob for a blob of `size` bytes that may still be
 * arriving at the broker (a call's argument submitted while its upload goes
 * on): GET ?follow=SIZE streams each chunk once the broker has synced it and
 * ends at the broker's commit. An upload that stalls is cut off by the broker
 * and returned as a transport error, with what arrived kept for a resume. */
int prpc_httpc_follow_blob(prpc_httpc_t *h, const char *sha_hex, uint64_t size,
                           prpc_blobdir_t *bd, prpc_error_t *err);

#endif
