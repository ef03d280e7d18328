/*
 * broker_waiters.c - parked long-polls and announced outputs (broker_waiters.h).
 *
 * Long-polls: over HTTP/1 h2o does not notice a client that went away while
 * its request is parked, so "answered" never means "received". Leases make
 * that safe: a lease handed to a departed worker lapses and the call is
 * queued again. Everything here runs on the loop thread, so the waiter lists
 * need no lock.
 */
#include "broker_waiters.h"
#include "broker_reply.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void prpc__call_waiter_dispose(void *p)
{
    call_waiter_t *w = p;
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
}

void prpc__batch_waiter_dispose(void *p)
{
    batch_waiter_t *w = p;
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
}

void prpc__lease_waiter_dispose(void *p)
{
    lease_waiter_t *w = p;
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
}

void prpc__notify_calls(prpc_broker_t *b, const char *id, int force_all)
{
    h2o_linklist_t *node = b->call_waiters.next;
    /* Batch reads care about one call at a time; the periodic sweeps (id NULL)
     * that concern them call prpc__notify_batches themselves. */
    if (id != NULL)
        prpc__notify_batches(b, id, 0);
    while (node != &b->call_waiters) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, node);
        prpc_call_t c;
        prpc_error_t err;
        int rc;
        node = node->next;
        if (id != NULL && strcmp(w->id, id) != 0)
            continue;
        memset(&c, 0, sizeof(c));
        rc = prpc_store_call_get(b->store, w->id, &c, &err);
        if (rc == 0 && !force_all && !prpc_call_state_is_terminal(c.state) &&
            (w->until_end ? w->since != INT64_MIN : c.updated_ms == w->since)) {
            prpc_call_cleanup(&c);
            continue;
        }
        h2o_linklist_unlink(&w->link);
        if (rc != 0)
            prpc__send_err(w->req, &err);
        else if (w->until_end)
            prpc__send_call(w->req, &c,
                            w->created ? "\"created\": true, " : "\"created\": false, ");
        else
            prpc__send_call_arriving(w->req, &c, NULL, prpc__arriving_for(b, &c));
        prpc_call_cleanup(&c);
    }
}

int prpc__answer_batch(prpc_broker_t *b, h2o_req_t *req, char (*ids)[PRPC_CALL_ID_HEX + 1],
                       size_t n, int force)
{
    prpc_buf_t calls = PRPC_BUF_INIT, missing = PRPC_BUF_INIT, out = PRPC_BUF_INIT;
    size_t ncalls = 0, nmissing = 0;
    prpc_error_t err;
    char *a, *m;
    int *states = malloc(n * sizeof(*states));
    /* One query for all the states; full records only for the calls that ended. */
    if (states == NULL || prpc_store_calls_states(b->store, (const char(*)[65])ids, n, states,
                                                  &err) != 0) {
        free(states);
        if (!force)
            return 0; /* asked again at the next change or tick */
        prpc_httpd_send_error(req, 500, PRPC_EIO, "reading the calls' states failed");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        prpc_call_t c;
        int rc;
        if (states[i] >= 0 && !prpc_call_state_is_terminal(states[i]))
            continue;
        memset(&c, 0, sizeof(c));
        rc = states[i] < 0 ? PRPC_ENOTFOUND : prpc_store_call_get(b->store, ids[i], &c, &err);
        if (rc == PRPC_ENOTFOUND) {
            prpc_buf_printf(&missing, "%s\"%s\"", nmissing++ ? ", " : "", ids[i]);
        } else if (rc == 0 && prpc_call_state_is_terminal(c.state)) {
            if (ncalls++)
                prpc_buf_puts(&calls, ", ");
            prpc__write_call(&calls, &c, 0);
        }
        prpc_call_cleanup(&c);
    }
    free(states);
    if (!force && ncalls == 0 && nmissing == 0) {
        prpc_buf_cleanup(&calls);
        prpc_buf_cleanup(&missing);
        return 0;
    }
    a = prpc_buf_take(&calls, NULL, &err);
    m = prpc_buf_take(&missing, NULL, &err);
    prpc_buf_printf(&out, "{\"calls\": [%s], \"missing\": [%s]}", a ? a : "", m ? m : "");
    free(a);
    free(m);
    prpc__send_buf(req, 200, &out);
    return 1;
}

void prpc__notify_batches(prpc_broker_t *b, const char *id, int64_t now)
{
    h2o_linklist_t *node = b->batch_waiters.next;
    if (node == &b->batch_waiters)
        return;
    if (id != NULL && id[0] != '\0') {
        /* Batch reads wait for calls to end: a call that merely changed (was
         * leased, made progress) concerns none of them. One look here saves
         * every concerned waiter a look at all of its calls. */
        prpc_call_t c;
        prpc_error_t err;
        int ended;
        memset(&c, 0, sizeof(c));
        ended = prpc_store_call_get(b->store, id, &c, &err) != 0 ||
                prpc_call_state_is_terminal(c.state);
        prpc_call_cleanup(&c);
        if (!ended)
            return;
    }
    while (node != &b->batch_waiters) {
        batch_waiter_t *w = H2O_STRUCT_FROM_MEMBER(batch_waiter_t, link, node);
        int concerned = id == NULL || w->deadline_ms <= now;
        node = node->next;
        for (size_t i = 0; !concerned && i < w->n; i++)
            concerned = strcmp(w->ids[i], id) == 0;
        if (!concerned)
            continue;
        h2o_linklist_unlink(&w->link);
        if (!prpc__answer_batch(b, w->req, w->ids, w->n, w->deadline_ms <= now))
            h2o_linklist_insert(&b->batch_waiters, &w->link);
    }
}

void prpc__notify_arriving(prpc_broker_t *b, const char *id)
{
    h2o_linklist_t *node = b->call_waiters.next;
    while (node != &b->call_waiters) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, node);
        prpc_call_t c;
        prpc_error_t err;
        node = node->next;
        if (w->until_end || strcmp(w->id, id) != 0)
            continue;
        memset(&c, 0, sizeof(c));
        if (prpc_store_call_get(b->store, w->id, &c, &err) != 0) {
            prpc_call_cleanup(&c);
            continue; /* answered at the next change or its deadline */
        }
        h2o_linklist_unlink(&w->link);
        prpc__send_call_arriving(w->req, &c, NULL, prpc__arriving_for(b, &c));
        prpc_call_cleanup(&c);
    }
}

/* A lease answer carries the call's checkpoints, so that a call leased again
 * resumes from what an earlier holder saved. Without them the function would
 * silently start over, so a failure to read them fails the answer: the lease
 * then lapses and is granted again. */
int prpc__send_lease(prpc_broker_t *b, h2o_req_t *req, const prpc_call_t *c)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    prpc_checkpoint_t *ck = calloc(PRPC_CHECKPOINTS_MAX, sizeof(*ck));
    prpc_error_t err;
    size_t n = 0;
    if (ck == NULL) {
        prpc_httpd_send_error(req, 500, PRPC_ENOMEM, "out of memory");
        return PRPC_ENOMEM;
    }
    if (prpc_store_checkpoints_list(b->store, c->id, ck, PRPC_CHECKPOINTS_MAX, &n, &err) != 0) {
        free(ck);
        prpc__send_err(req, &err);
        return err.code;
    }
    prpc_buf_printf(&out,
                    "{\"lease\": {\"id\": \"%s\", \"call_id\": \"%s\", \"deadline_ms\": %lld, "
                    "\"heartbeat_ms\": %d}, \"call\": ",
                    c->lease_id, c->id, (long long)c->lease_deadline_ms, b->heartbeat_ms);
    prpc__write_call(&out, c, 1);
    prpc_buf_puts(&out, ", \"checkpoints\": [");
    for (size_t i = 0; i < n; i++)
        prpc_buf_printf(&out, "%s{\"key\": \"%s\", \"blob\": \"%s\", \"size\": %llu}",
                        i ? ", " : "", ck[i].key, ck[i].sha256, (unsigned long long)ck[i].size);
    prpc_buf_puts(&out, "]}");
    free(ck);
    prpc__send_buf(req, 200, &out);
    return 0;
}

/* A worker (by name) may hold at most max_leases_per_worker calls: one that
 * asks for more (a runaway or hostile one) is refused, not served. */
static int lease_limit_reached(prpc_broker_t *b, const char *worker, prpc_error_t *err)
{
    int64_t held = 0;
    if (prpc_store_leases_held(b->store, worker, &held, err) != 0)
        return 0; /* the lease attempt reports store trouble itself */
    if (held < b->max_leases_per_worker)
        return 0;
    prpc_error_set(err, PRPC_ELIMIT,
                   "worker %s already holds %lld leases; the limit is %d "
                   "(--max-leases-per-worker)",
                   worker, (long long)held, b->max_leases_per_worker);
    return 1;
}

void prpc__dispatch_leases(prpc_broker_t *b)
{
    h2o_linklist_t *node = b->lease_waiters.next;
    while (node != &b->lease_waiters) {
        lease_waiter_t *w = H2O_STRUCT_FROM_MEMBER(lease_waiter_t, link, node);
        prpc_call_t c;
        prpc_error_t err;
        int rc;
        node = node->next;
        memset(&c, 0, sizeof(c));
        if (lease_limit_reached(b, w->worker, &err)) {
            h2o_linklist_unlink(&w->link);
            prpc_httpd_send_error(w->req, 429, err.code, "%s", err.message);
            continue;
        }
        rc = prpc_store_lease_next(b->store, w->functions, w->versions, w->n, w->worker,
                                   b->lease_ms, prpc_now_ms(), &c, &err);
        if (rc == PRPC_ENOTFOUND)
            continue;
        h2o_linklist_unlink(&w->link);
        if (rc != 0) {
            prpc__send_err(w->req, &err);
        } else {
            b->metrics.leases_granted++;
            if (w->request[0] != '\0') {
                struct granted *g = &b->granted[b->granted_next++ % GRANTED_MAX];
                memcpy(g->request, w->request, sizeof(g->request));
                memcpy(g->call_id, c.id, sizeof(g->call_id));
                memcpy(g->lease_id, c.lease_id, sizeof(g->lease_id));
            }
            prpc__send_lease(b, w->req, &c);
        }
        prpc_call_cleanup(&c);
        /* The state of the leased call changed: readers learn it. */
        if (rc == 0)
            prpc__notify_calls(b, c.id, 0);
    }
}

void prpc__arriving_drop(prpc_broker_t *b, const char *call_id)
{
    for (int i = 0; i < BROKER_ARRIVING_MAX; i++) {
        arriving_outputs_t *a = &b->arriving[i];
        if (a->call_id[0] != '\0' && (call_id == NULL || strcmp(a->call_id, call_id) == 0)) {
            free(a->outputs_json);
            memset(a, 0, sizeof(*a));
        }
    }
}

/* The outputs announced for c's current lease, or NULL. */
const char *prpc__arriving_for(const prpc_broker_t *b, const prpc_call_t *c)
{
    if (c->state != PRPC_CALL_LEASED)
        return NULL;
    for (int i = 0; i < BROKER_ARRIVING_MAX; i++) {
        const arriving_outputs_t *a = &b->arriving[i];
        if (strcmp(a->call_id, c->id) == 0 && strcmp(a->lease_id, c->lease_id) == 0)
            return a->outputs_json;
    }
    return NULL;
}

/* Takes outputs_json. Replaces what call_id had; else takes a free slot, else
 * the oldest announcement (a hint lost costs only its head start). */
void prpc__arriving_put(prpc_broker_t *b, const char *call_id, const char *lease_id,
                        char *outputs_json)
{
    arriving_outputs_t *slot = NULL;
    prpc__arriving_drop(b, call_id);
    for (int i = 0; i < BROKER_ARRIVING_MAX; i++) {
        arriving_outputs_t *a = &b->arriving[i];
        if (a->call_id[0] == '\0') {
            slot = a;
            break;
        }
        if (slot == NULL || a->at_ms < slot->at_ms)
            slot = a;
    }
    free(slot->outputs_json);
    snprintf(slot->call_id, sizeof(slot->call_id), "%s", call_id);
    snprintf(slot->lease_id, sizeof(slot->lease_id), "%s", lease_id);
    slot->outputs_json = outputs_json;
    slot->at_ms = prpc_now_ms();
}

void prpc__waiters_tick(prpc_broker_t *b, int64_t now)
{
    h2o_linklist_t *node;

    for (node = b->call_waiters.next; node != &b->call_waiters;) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, node);
        node = node->next;
        if (w->deadline_ms <= now)
            w->since = INT64_MIN; /* out of date by definition: answer it */
    }
    prpc__notify_calls(b, NULL, 0);
    prpc__notify_batches(b, "", now); /* "" matches no id: only expired waits answer */
    for (node = b->lease_waiters.next; node != &b->lease_waiters;) {
        lease_waiter_t *w = H2O_STRUCT_FROM_MEMBER(lease_waiter_t, link, node);
        node = node->next;
        if (w->deadline_ms <= now) {
            h2o_linklist_unlink(&w->link);
            prpc_httpd_send_json(w->req, 204, "", 0);
        }
    }
}

void prpc__waiters_stop(prpc_broker_t *b)
{
    while (!h2o_linklist_is_empty(&b->call_waiters)) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, b->call_waiters.next);
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_error(w->req, 503, PRPC_ECONN, "the broker is shutting down");
    }
    while (!h2o_linklist_is_empty(&b->batch_waiters)) {
        batch_waiter_t *w = H2O_STRUCT_FROM_MEMBER(batch_waiter_t, link, b->batch_waiters.next);
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_error(w->req, 503, PRPC_ECONN, "the broker is shutting down");
    }
    while (!h2o_linklist_is_empty(&b->lease_waiters)) {
        lease_waiter_t *w = H2O_STRUCT_FROM_MEMBER(lease_waiter_t, link, b->lease_waiters.next);
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_error(w->req, 503, PRPC_ECONN, "the broker is shutting down");
    }
}
