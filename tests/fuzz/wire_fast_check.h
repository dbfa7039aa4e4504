/* The differential check of the envelope decoder's fast path (rpc/wire_fast.c), shared by its
   fuzz target and its unit test: every envelope the fast path accepts, protobuf-c must accept
   too and read to the same fields. Returns NULL when they agree (or the fast path declined),
   else what differed. */
#ifndef FERRY_TESTS_WIRE_FAST_CHECK_H
#define FERRY_TESTS_WIRE_FAST_CHECK_H

#include <string.h>

#include "rpc/wire_internal.h"

static const char *wire_fast_nodes_differ(Ferry__Wire__Node *const *a, size_t na,
                                          Ferry__Wire__Node *const *b, size_t nb)
{
    if (na != nb)
        return "node counts";
    for (size_t i = 0; i < na; i++) {
        const Ferry__Wire__Node *x = a[i], *y = b[i];
        if (x->kind != y->kind || !x->b != !y->b || x->i != y->i || x->d != y->d ||
            x->count != y->count)
            return "a node's scalars";
        if (x->data.len != y->data.len || x->key.len != y->key.len || y->tensor || y->rref ||
            x->tensor || x->rref)
            return "a node's data, key, tensor or rref";
    }
    return NULL;
}

/* *accepted says whether the fast path took it. */
static const char *wire_fast_differs(const uint8_t *p, size_t len, bool *accepted)
{
    static ferry__wire_fast fast; /* large; the callers are single-threaded */
    *accepted = ferry__wire_fast_unpack(p, len, &fast);
    if (!*accepted)
        return NULL;
    Ferry__Wire__Envelope *pb = ferry__wire__envelope__unpack(NULL, len, p);
    if (!pb)
        return "protobuf-c refused what the fast path accepted";
    const Ferry__Wire__Envelope *f = &fast.env;
    const char *why = NULL;
    if (pb->base.n_unknown_fields)
        why = "unknown fields";
    else if (f->version != pb->version || f->id != pb->id || f->src != pb->src ||
             !f->no_reply != !pb->no_reply)
        why = "the envelope's scalars";
    else if (pb->n_attachments || pb->n_ext || f->n_attachments || f->n_ext)
        why = "attachments or ext";
    else if (f->body_case != pb->body_case)
        why = "the body";
    else if (f->body_case == FERRY__WIRE__ENVELOPE__BODY_CALL) {
        const Ferry__Wire__Call *x = f->call, *y = pb->call;
        if (strcmp(x->fn ? x->fn : "", y->fn ? y->fn : "") != 0 ||
            memcmp(&x->timeout_s, &y->timeout_s, sizeof x->timeout_s) != 0 ||
            y->base.n_unknown_fields)
            why = "the call's fn or timeout";
        else if (!(why = wire_fast_nodes_differ(x->args, x->n_args, y->args, y->n_args)))
            why = wire_fast_nodes_differ(x->kwargs, x->n_kwargs, y->kwargs, y->n_kwargs);
    } else if (f->body_case == FERRY__WIRE__ENVELOPE__BODY_RESPONSE) {
        if (pb->response->base.n_unknown_fields)
            why = "the response's unknown fields";
        else
            why = wire_fast_nodes_differ(f->response->value, f->response->n_value,
                                         pb->response->value, pb->response->n_value);
    }
    if (!why) {
        /* Nodes must not carry unknown fields either. */
        size_t n = 0;
        Ferry__Wire__Node *const *nodes[2] = {NULL, NULL};
        size_t counts[2] = {0, 0};
        if (pb->body_case == FERRY__WIRE__ENVELOPE__BODY_CALL) {
            nodes[0] = pb->call->args, counts[0] = pb->call->n_args;
            nodes[1] = pb->call->kwargs, counts[1] = pb->call->n_kwargs;
        } else {
            nodes[0] = pb->response->value, counts[0] = pb->response->n_value;
        }
        for (int k = 0; k < 2; k++)
            for (size_t i = 0; i < counts[k]; i++)
                n += nodes[k][i]->base.n_unknown_fields;
        if (n)
            why = "a node's unknown fields";
    }
    ferry__wire__envelope__free_unpacked(pb, NULL);
    return why;
}

#endif
