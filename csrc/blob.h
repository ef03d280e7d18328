/*
 * blob.h - a node's blob directory: content-addressed files named by their
 * SHA-256, written in verified chunks to a temp file, fsynced, then renamed
 * into place. Used by the broker (its blob store), the worker (its blob cache)
 * and the client (its result cache).
 *
 * Layout under the directory: `ab/cdef...` for complete blobs (ab = first two
 * hex chars) and `tmp/<sha>.part` for partial uploads. Nothing is ever written
 * outside the directory; a user's file name never becomes a path.
 *
 * Thread safety: distinct blobs may be written from different threads at
 * once; one blob's partial file is written by one writer at a time (the
 * broker's blob thread does all its chunk writes and commits).
 */
#ifndef PRPC_BLOB_H
#define PRPC_BLOB_H

#include "common.h"

#define PRPC_BLOB_CHUNK (8u * 1024 * 1024) /* largest upload chunk, bytes */
/* The chunk this engine's uploaders send: two are on the wire at once, and a
 * broker holds each whole in memory (twice over while h2o grows its buffer),
 * so half the largest keeps a broker's memory what one chunk of the largest
 * size took. */
#define PRPC_BLOB_UPLOAD_CHUNK (4u * 1024 * 1024)
#define PRPC_BLOB_PATH_MAX 4096

typedef struct prpc_blobdir prpc_blobdir_t;

/* Open (creating when missing) a blob directory. NULL + err on failure. */
prpc_blobdir_t *prpc_blobdir_open(const char *dir, prpc_error_t *err);
void prpc_blobdir_free(prpc_blobdir_t *bd); /* accepts NULL */

/* 1 when sha is 64 lowercase hex, else 0. */
int prpc_blob_valid_sha(const char *sha);

/* Path of the complete blob (whether or not it exists). */
int prpc_blobdir_path(const prpc_blobdir_t *bd, const char *sha, char out[PRPC_BLOB_PATH_MAX],
                      prpc_error_t *err);

/* 0 and *size when the complete blob is present; PRPC_ENOTFOUND otherwise. */
int prpc_blobdir_stat(const prpc_blobdir_t *bd, const char *sha, uint64_t *size,
                      prpc_error_t *err);

/* Bytes of sha's partial file received and synced so far (0 when none). */
int prpc_blobdir_partial(const prpc_blobdir_t *bd, const char *sha, uint64_t *size,
                         prpc_error_t *err);

/* Append one chunk at offset (which must equal the partial size: PRPC_ESTATE
 * otherwise). When chunk_sha_hex is not NULL the chunk must hash to it
 * (PRPC_ECORRUPT otherwise, nothing written). The data is fsynced before
 * returning. *partial gets the new partial size. */
int prpc_blobdir_write_chunk(prpc_blobdir_t *bd, const char *sha, uint64_t offset,
                             const void *data, size_t len, const char *chunk_sha_hex,
                             uint64_t *partial, prpc_error_t *err);

/* Hash the whole partial file; when it is `size` bytes and hashes to sha,
 * rename it into place (fsyncing the directory) and return 0. Otherwise drop
 * the partial file and return PRPC_ECORRUPT naming the blob. Committing a blob
 * already present returns 0. */
int prpc_blobdir_commit(prpc_blobdir_t *bd, const char *sha, uint64_t size, prpc_error_t *err);

#ifdef PRPC_UNITTEST
/* Copy a local file into the directory, streaming in bounded chunks, verifying
 * it hashes to sha (when sha is not NULL) and writing the blob's name into
 * sha_out. For tests/c and tests/fuzz only (built with -DPRPC_UNITTEST): the engine
 * never calls it, so the extension does not carry it. */
int prpc_blobdir_import_fd(prpc_blobdir_t *bd, int fd, const char *sha, char sha_out[65],
                           uint64_t *size, prpc_error_t *err);
#endif

/* Open sha's partial file for a download to append to (resuming after
 * *offset bytes already there). The caller writes at *offset onwards, fsyncs,
 * closes the fd, then calls prpc_blobdir_commit. A caller that also hands
 * each write to prpc_blobdir_feed spares the commit reading the file again. */
/* Bytes just written at offset of sha's partial file, for its running hash:
 * writes from offset 0 on, in order, let commit skip hashing the file (any
 * other order only makes it hash the file as before). */
void prpc_blobdir_feed(prpc_blobdir_t *bd, const char *sha, uint64_t offset, const void *data,
                       size_t len);

int prpc_blobdir_partial_open(prpc_blobdir_t *bd, const char *sha, int *fd, uint64_t *offset,
                              prpc_error_t *err);

/* Writes blob bytes to a file in order, bypassing the page cache (O_DIRECT)
 * for the block-aligned run of them: every blob write is fsynced anyway, and
 * a buffered write first copies each byte into a freshly allocated page-cache
 * page, which on a VM costs more CPU than hashing it and swings the write
 * speed several-fold (bench/README.md). Bytes are staged in an aligned buffer
 * and written a stage at a time; unaligned heads and tails, and files whose
 * file system refuses O_DIRECT, take the ordinary path. Caller storage:
 * _init/_cleanup. Writes are durable only after _flush and an fsync.
 * Used for every blob a node receives: the chunks uploaded to a broker, and
 * downloads (a worker's arguments, a client's results). A download's reader
 * (the function, the user) then reads it from the disk, not the page cache:
 * measured on this VM, a 1 GiB call got faster overall (the buffered write's
 * copy into fresh pages cost 2.5 CPU-s per GiB in its slow phases), and a
 * readahead after each write (to have it cached again) made it slower, the
 * disk then carrying every byte twice while the transfer ran. */
#define PRPC_BLOB_DIRECT_ALIGN 4096u       /* offset, length and memory alignment */
#define PRPC_BLOB_STAGE (1024u * 1024)     /* bytes per O_DIRECT write */

typedef struct prpc_blob_writer {
    int fd;         /* borrowed: the caller closes it after _cleanup */
    int direct;     /* 1: fd is in O_DIRECT mode now; 0: buffered */
    int no_direct;  /* 1 once O_DIRECT was refused here: buffered from then on */
    uint64_t off;   /* file offset of stage[0] */
    size_t staged;  /* bytes in stage */
    uint8_t *stage; /* PRPC_BLOB_STAGE bytes, aligned; NULL: buffered only */
    int own_stage;  /* 1 when stage is ours to free */
} prpc_blob_writer_t;

/* Start writing fd at offset. stage may be a caller's PRPC_BLOB_STAGE-byte
 * buffer aligned to PRPC_BLOB_DIRECT_ALIGN (borrowed until _cleanup); NULL
 * allocates one, and when that fails writes go the buffered way. */
void prpc_blob_writer_init(prpc_blob_writer_t *w, int fd, uint64_t offset, uint8_t *stage);

/* Write len bytes at the writer's offset (the next byte after the last
 * written). Returns 0, or PRPC_ENOSPC (disk full) / PRPC_EIO naming the
 * offset, errno left as the failed call set it. After a failure the staged
 * bytes are dropped and what the file holds past the last successful write
 * is unspecified (a write can fail part-way): the caller truncates. */
int prpc_blob_writer_write(prpc_blob_writer_t *w, const void *data, size_t len,
                           prpc_error_t *err);

/* Write whatever is staged. Errors as prpc_blob_writer_write. */
int prpc_blob_writer_flush(prpc_blob_writer_t *w, prpc_error_t *err);

/* Release the stage (staged bytes not flushed are dropped) and put fd back in
 * buffered mode. */
void prpc_blob_writer_cleanup(prpc_blob_writer_t *w);

/* Open sha's partial file read-only: *fd and the bytes it holds now. For a
 * download that follows an upload still arriving; the fd stays valid when the
 * commit renames the file into place. PRPC_ENOTFOUND when there is none. */
int prpc_blobdir_partial_read(prpc_blobdir_t *bd, const char *sha, int *fd, uint64_t *size,
                              prpc_error_t *err);

/* Re-hash a complete blob; PRPC_ECORRUPT (and the blob is removed) when its
 * content no longer matches its name. */
int prpc_blobdir_verify(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err);

/* Mark sha's partial file as just written (its mtime): an upload about to go
 * on. Missing is not an error. */
int prpc_blobdir_partial_touch(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err);

/* Mark a complete blob as just used (its mtime), for prpc_blobdir_trim. */
int prpc_blobdir_touch(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err);

/* Bound the directory: while its complete blobs total more than max_bytes,
 * remove the least recently used (oldest mtime) among those last used before
 * used_before_ns (CLOCK_REALTIME ns; blobs a running job uses are newer).
 * *removed (may be NULL) gets the bytes freed. Partial files are not counted. */
int prpc_blobdir_trim(prpc_blobdir_t *bd, uint64_t max_bytes, int64_t used_before_ns,
                      uint64_t *removed, prpc_error_t *err);

/* Remove a complete blob and any partial file. Missing is not an error. */
int prpc_blobdir_remove(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err);

#endif
