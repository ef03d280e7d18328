/*
 * httpc.h - the client side of the wire (docs/API.md): one persistent libcurl
 * easy handle bound to one broker, plus blob upload and download on top of it.
 * Used by the client (through the Python binding) and by the worker loop.
 *
 * A handle keeps its connection open between requests (HTTP/1.1 keep-alive),
 * so a node talks to a broker over one TCP connection per handle. When the
 * handle has a key, every request is signed as docs/API.md "Authentication"
 * says; the password never reaches this layer.
 *
 * Errors: transport failures are PRPC_ECONN (refused, unreachable, reset; the
 * message names the URL) or PRPC_ETIMEDOUT. An HTTP status is not an error of
 * prpc_httpc_request(): the caller reads it, except 401, which is PRPC_EAUTH
 * carrying the broker's message. The blob functions turn every status they do
 * not expect into the engine code the broker named (prpc_httpc_status_error).
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

#include <stdatomic.h>

#define PRPC_HTTPC_MAX_BODY (4u * 1024 * 1024) /* largest metadata answer kept, bytes */
#define PRPC_HTTPC_URL_MAX 512                  /* longest base URL */
#define PRPC_HTTPC_STALL_BYTES 1024             /* a blob transfer slower than this... */
#define PRPC_HTTPC_STALL_S 30                   /* ...for this many seconds is dropped */
#define PRPC_HTTPC_UPLOAD_RESYNCS 3 /* times an upload re-asks the broker's offset */

typedef struct prpc_httpc prpc_httpc_t;

/* A handle bound to base_url: "http://host:port", "https://host:port" or a
 * bare "host:port" line as in discovery.txt (http is assumed); surrounding
 * blanks and a trailing '/' are dropped; any other path is PRPC_EINVAL.
 * key (PRPC_AUTH_KEY_LEN bytes, copied) may be NULL for an open network.
 * connect_timeout_ms <= 0 means 5000. Returns NULL with err filled
 * (PRPC_EINVAL naming the URL, PRPC_ENOMEM). */
prpc_httpc_t *prpc_httpc_new(const char *base_url, const uint8_t *key, int connect_timeout_ms,
                             prpc_error_t *err);

/* Close the connection and free the handle; NULL is fine. */
void prpc_httpc_free(prpc_httpc_t *h);

/* The normalised base URL ("http://host:port"); valid as long as h. */
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
 * PRPC_HTTPC_MAX_BODY), PRPC_EAUTH (a 401; *status is set too), PRPC_ESTATE
 * (cancelled), PRPC_EINVAL (bad method or path), PRPC_ENOMEM. */
int prpc_httpc_request(prpc_httpc_t *h, const char *method, const char *path_and_query,
                       const char *body, size_t body_len, int timeout_ms, long *status,
                       char **resp_body, size_t *resp_len, prpc_error_t *err);

/* Map a non-2xx answer to an engine code: the broker's
 * {"error": {"code", "message"}} when it parses (the message is kept, prefixed
 * by what), else PRPC_EPROTO naming the status. Returns the code. */
int prpc_httpc_status_error(long status, const char *body, size_t len, const char *what,
                            prpc_error_t *err);

/* Make the broker hold blob sha_hex (64 lowercase hex) whose content is the
 * first `size` bytes of fd. Asks first (HEAD): a blob the broker already holds
 * is not sent again, a partial one resumes where the broker's copy ends; then
 * PUTs chunks of at most PRPC_BLOB_CHUNK bytes, each read with pread (the fd's
 * position is untouched) and carrying its own SHA-256, then commits. Holds at
 * most one chunk in memory. Blocks: call without the GIL.
 * Errors: transport codes as prpc_httpc_request; PRPC_EIO when fd cannot be
 * read or is shorter than size; PRPC_ECORRUPT when the broker finds the
 * content does not hash to sha_hex; other broker refusals by their code. */
int prpc_httpc_upload_blob(prpc_httpc_t *h, int fd, const char *sha_hex, uint64_t size,
                           prpc_error_t *err);

/* Make bd hold blob sha_hex, fetched from the broker when it is not there
 * already: streamed to bd's partial file (resuming with Range after what a
 * previous attempt left), fsynced, then committed, which verifies the hash.
 * A corrupt result is dropped and fetched once more from zero. Memory stays
 * bounded by libcurl's buffer whatever the blob's size.
 * Errors: transport codes as prpc_httpc_request; PRPC_ENOTFOUND when the
 * broker does not hold it; PRPC_ECORRUPT when both attempts failed the hash;
 * PRPC_EIO / PRPC_ENOSPC writing bd. */
int prpc_httpc_download_blob(prpc_httpc_t *h, const char *sha_hex, prpc_blobdir_t *bd,
                             prpc_error_t *err);

#endif
