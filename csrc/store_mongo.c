/*
 * store_mongo.c - the MongoDB store backend, for deployments where several
 * brokers share one replica set.
 *
 * Not implemented yet: this build answers every "mongodb://" uri with
 * ENOTSUP, naming the reason, so a broker configured for MongoDB fails at
 * start instead of silently using something else. Builds with libmongoc
 * (-DPRPC_HAVE_MONGOC) will implement struct prpc_store_ops here with a
 * mongoc_client_pool_t; the #ifdef stays in this file.
 *
 * Thread safety: nothing is kept.
 */
#include "store.h"

#ifdef PRPC_HAVE_MONGOC
#define MONGO_REASON "the MongoDB store backend is not implemented yet"
#else
#define MONGO_REASON "this build has no MongoDB support (libmongoc was not found at build time)"
#endif

prpc_store_t *prpc__store_mongo_open(const char *uri, const prpc_store_options_t *opts,
                                     prpc_error_t *err)
{
    PRPC_UNUSED(uri);
    PRPC_UNUSED(opts);
    prpc_error_set(err, PRPC_ENOTSUP, "cannot open a mongodb:// store: %s; use sqlite:PATH",
                   MONGO_REASON);
    return NULL;
}
