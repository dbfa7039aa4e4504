/* torch's param_groups as JSON text, the form the state file keeps them in: written with each
   kind's keys in torch's order (torch-only switches such as foreach and fused with their
   defaults, so torch's load_state_dict gets every key its step reads) and numbers as Python
   writes them, and read back by a small strict parser that takes what Python's json.dumps
   writes (Infinity and NaN included). */
#include "optim/optim_impl.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef enum { F_NUM, F_BOOL, F_PAIR, F_NULL, F_FALSE } field_type;

typedef struct {
    const char *key;
    field_type type;
    size_t offset; /* into ferry_optim_options; unused for F_NULL / F_FALSE */
} field;

#define NUM(name) {#name, F_NUM, offsetof(ferry_optim_options, name)}
#define BOOL(name) {#name, F_BOOL, offsetof(ferry_optim_options, name)}
#define PAIR(name) {#name, F_PAIR, offsetof(ferry_optim_options, name)}
#define FIXED(name, type) {#name, type, 0}

static const field sgd[] = {NUM(lr), NUM(momentum), NUM(dampening), NUM(weight_decay),
                            BOOL(nesterov), BOOL(maximize), FIXED(foreach, F_NULL),
                            FIXED(differentiable, F_FALSE), {NULL, F_NULL, 0}};
static const field adam[] = {NUM(lr), PAIR(betas), NUM(eps), NUM(weight_decay), BOOL(amsgrad),
                             BOOL(maximize), FIXED(foreach, F_NULL), FIXED(capturable, F_FALSE),
                             FIXED(differentiable, F_FALSE), FIXED(fused, F_FALSE),
                             {NULL, F_NULL, 0}};
static const field adamw[] = {NUM(lr), PAIR(betas), NUM(eps), NUM(weight_decay), BOOL(amsgrad),
                              FIXED(foreach, F_NULL), BOOL(maximize), FIXED(capturable, F_FALSE),
                              {NULL, F_NULL, 0}};
static const field adagrad[] = {NUM(lr), NUM(lr_decay), NUM(eps), NUM(weight_decay),
                                NUM(initial_accumulator_value), FIXED(foreach, F_NULL),
                                BOOL(maximize), {NULL, F_NULL, 0}};
static const field rmsprop[] = {NUM(lr), NUM(momentum), NUM(alpha), NUM(eps), BOOL(centered),
                                NUM(weight_decay), FIXED(foreach, F_NULL), BOOL(maximize),
                                FIXED(differentiable, F_FALSE), {NULL, F_NULL, 0}};
static const field adadelta[] = {NUM(lr), NUM(rho), NUM(eps), NUM(weight_decay), BOOL(maximize),
                                 FIXED(foreach, F_NULL), {NULL, F_NULL, 0}};
static const field adamax[] = {NUM(lr), PAIR(betas), NUM(eps), NUM(weight_decay),
                               FIXED(foreach, F_NULL), BOOL(maximize), {NULL, F_NULL, 0}};
static const field rprop[] = {NUM(lr), PAIR(etas), PAIR(step_sizes), FIXED(foreach, F_NULL),
                              BOOL(maximize), {NULL, F_NULL, 0}};

static const field *const kind_fields[FERRY_OPTIM_KIND_COUNT] = {
    [FERRY_SGD] = sgd,         [FERRY_ADAM] = adam,         [FERRY_ADAMW] = adamw,
    [FERRY_ADAGRAD] = adagrad, [FERRY_RMSPROP] = rmsprop,   [FERRY_ADADELTA] = adadelta,
    [FERRY_ADAMAX] = adamax,   [FERRY_RPROP] = rprop,
};

/* ---- writing ---- */

typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *s)
{
    size_t n = strlen(s);
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *d = ferry__realloc(t->data, cap);
        if (d == NULL) {
            t->failed = true;
            return;
        }
        t->data = d;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n + 1);
    t->len += n;
}

/* A number as Python's json.dumps writes a float. */
static void put_num(text *t, double v)
{
    char b[40];
    put(t, isnan(v) ? "NaN" : isinf(v) ? (v < 0 ? "-Infinity" : "Infinity")
                                       : ferry__py_float(v, b, sizeof b));
}

char *ferry__optim_groups_json(const ferry_optimizer *opt)
{
    text t = {0};
    put(&t, "[");
    for (size_t g = 0; g < opt->n_groups; g++) {
        const ferry__optim_group *grp = &opt->groups[g];
        const char *o = (const char *)&grp->o;
        put(&t, g ? ", {" : "{");
        for (const field *f = kind_fields[opt->kind]; f->key != NULL; f++) {
            put(&t, "\"");
            put(&t, f->key);
            put(&t, "\": ");
            const double *d = (const double *)(o + f->offset);
            switch (f->type) {
            case F_NUM: put_num(&t, *d); break;
            case F_BOOL: put(&t, *(const bool *)(o + f->offset) ? "true" : "false"); break;
            case F_PAIR:
                put(&t, "[");
                put_num(&t, d[0]);
                put(&t, ", ");
                put_num(&t, d[1]);
                put(&t, "]");
                break;
            case F_NULL: put(&t, "null"); break;
            case F_FALSE: put(&t, "false"); break;
            }
            put(&t, ", ");
        }
        put(&t, "\"params\": [");
        for (size_t i = 0; i < grp->count; i++) {
            char b[32];
            snprintf(b, sizeof b, i ? ", %zu" : "%zu", grp->first + i);
            put(&t, b);
        }
        put(&t, "]}");
    }
    put(&t, "]");
    if (t.failed) {
        ferry__free(t.data);
        return ferry__fail_null(FERRY_ENOMEM, "no memory for the param_groups text");
    }
    return t.data;
}

/* ---- reading ---- */

typedef struct {
    const char *s;
    size_t pos;
} cursor;

static ferry_status bad(const cursor *c, const char *what)
{
    return ferry__fail(FERRY_EPROTO, "param_groups: %s at offset %zu", what, c->pos);
}

static void skip_ws(cursor *c)
{
    while (c->s[c->pos] == ' ' || c->s[c->pos] == '\n' || c->s[c->pos] == '\t' || c->s[c->pos] == '\r')
        c->pos++;
}

static bool eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->s[c->pos] != ch)
        return false;
    c->pos++;
    return true;
}

static bool eat_word(cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if (strncmp(c->s + c->pos, w, n) != 0)
        return false;
    c->pos += n;
    return true;
}

static ferry_status parse_num(cursor *c, double *out)
{
    skip_ws(c);
    if (eat_word(c, "NaN")) {
        *out = NAN;
        return FERRY_OK;
    }
    if (eat_word(c, "Infinity") || eat_word(c, "+Infinity")) {
        *out = INFINITY;
        return FERRY_OK;
    }
    if (eat_word(c, "-Infinity")) {
        *out = -INFINITY;
        return FERRY_OK;
    }
    const char *start = c->s + c->pos;
    if (*start != '-' && (*start < '0' || *start > '9'))
        return bad(c, "expected a number");
    char *end;
    errno = 0;
    *out = strtod(start, &end);
    if (end == start)
        return bad(c, "expected a number");
    c->pos += (size_t)(end - start);
    return FERRY_OK;
}

/* A key: a string without escapes (every key torch writes is plain ASCII). */
static ferry_status parse_key(cursor *c, char *buf, size_t cap)
{
    if (!eat(c, '"'))
        return bad(c, "expected a key");
    size_t n = 0;
    while (c->s[c->pos] != '"') {
        if (c->s[c->pos] == '\0' || c->s[c->pos] == '\\' || n + 1 >= cap)
            return bad(c, "unsupported key");
        buf[n++] = c->s[c->pos++];
    }
    buf[n] = '\0';
    c->pos++;
    if (!eat(c, ':'))
        return bad(c, "expected ':'");
    return FERRY_OK;
}

/* Skips any JSON value (a key this kind does not use, such as a scheduler's initial_lr). */
static ferry_status skip_value(cursor *c, int depth)
{
    skip_ws(c);
    char ch = c->s[c->pos];
    if (depth > 32)
        return bad(c, "nesting too deep");
    if (ch == '"') {
        for (c->pos++; c->s[c->pos] != '"'; c->pos++) {
            if (c->s[c->pos] == '\0')
                return bad(c, "unterminated string");
            if (c->s[c->pos] == '\\' && c->s[c->pos + 1] != '\0')
                c->pos++;
        }
        c->pos++;
        return FERRY_OK;
    }
    if (ch == '[' || ch == '{') {
        char close = ch == '[' ? ']' : '}';
        c->pos++;
        if (eat(c, close))
            return FERRY_OK;
        do {
            if (close == '}') {
                char key[64];
                ferry_status rc = parse_key(c, key, sizeof key);
                if (rc != FERRY_OK)
                    return rc;
            }
            ferry_status rc = skip_value(c, depth + 1);
            if (rc != FERRY_OK)
                return rc;
        } while (eat(c, ','));
        return eat(c, close) ? FERRY_OK : bad(c, "unterminated list or object");
    }
    if (eat_word(c, "true") || eat_word(c, "false") || eat_word(c, "null"))
        return FERRY_OK;
    double ignored;
    return parse_num(c, &ignored);
}

static ferry_status parse_ids(cursor *c, ferry__optim_saved_group *g)
{
    if (!eat(c, '['))
        return bad(c, "\"params\" is not a list");
    size_t cap = 0;
    if (eat(c, ']'))
        return FERRY_OK;
    do {
        double v;
        ferry_status rc = parse_num(c, &v);
        if (rc != FERRY_OK)
            return rc;
        if (v != floor(v) || v < 0 || v > 9e15)
            return bad(c, "a parameter id is not a non-negative integer");
        if (g->n_ids == cap) {
            cap = cap ? cap * 2 : 8;
            int64_t *ids = ferry__realloc(g->ids, cap * sizeof *ids);
            if (ids == NULL)
                return ferry__fail(FERRY_ENOMEM, "no memory for parameter ids");
            g->ids = ids;
        }
        g->ids[g->n_ids++] = (int64_t)v;
    } while (eat(c, ','));
    return eat(c, ']') ? FERRY_OK : bad(c, "unterminated \"params\" list");
}

static ferry_status parse_field(cursor *c, const field *f, ferry_optim_options *o)
{
    char *base = (char *)o;
    double *d = (double *)(base + f->offset);
    switch (f->type) {
    case F_NUM: return parse_num(c, d);
    case F_BOOL:
        if (eat_word(c, "true"))
            *(bool *)(base + f->offset) = true;
        else if (eat_word(c, "false"))
            *(bool *)(base + f->offset) = false;
        else
            return bad(c, "expected true or false");
        return FERRY_OK;
    case F_PAIR: {
        if (!eat(c, '['))
            return bad(c, "expected a pair");
        ferry_status rc = parse_num(c, &d[0]);
        if (rc == FERRY_OK && !eat(c, ','))
            rc = bad(c, "expected a pair");
        if (rc == FERRY_OK)
            rc = parse_num(c, &d[1]);
        if (rc == FERRY_OK && !eat(c, ']'))
            rc = bad(c, "expected a pair");
        return rc;
    }
    default: return skip_value(c, 0);
    }
}

static ferry_status parse_group(cursor *c, ferry_optim_kind kind, size_t index,
                                ferry__optim_saved_group *g)
{
    const field *fields = kind_fields[kind];
    bool seen[16] = {false}, seen_params = false;
    ferry_optim_options_init(&g->o, kind);
    if (!eat(c, '{'))
        return bad(c, "a parameter group is not an object");
    if (!eat(c, '}')) {
        do {
            char key[64];
            ferry_status rc = parse_key(c, key, sizeof key);
            if (rc != FERRY_OK)
                return rc;
            const field *f = fields;
            while (f->key != NULL && strcmp(f->key, key) != 0)
                f++;
            if (strcmp(key, "params") == 0) {
                seen_params = true;
                rc = parse_ids(c, g);
            } else if (f->key != NULL) {
                seen[f - fields] = true;
                rc = parse_field(c, f, &g->o);
            } else {
                rc = skip_value(c, 0);
            }
            if (rc != FERRY_OK)
                return rc;
        } while (eat(c, ','));
        if (!eat(c, '}'))
            return bad(c, "unterminated parameter group");
    }
    for (const field *f = fields; f->key != NULL; f++)
        if (!seen[f - fields] && (f->type == F_NUM || f->type == F_BOOL || f->type == F_PAIR))
            return ferry__fail(FERRY_EPROTO, "param_groups: group %zu has no \"%s\"", index, f->key);
    if (!seen_params)
        return ferry__fail(FERRY_EPROTO, "param_groups: group %zu has no \"params\"", index);
    return FERRY_OK;
}

void ferry__optim_saved_groups_free(ferry__optim_saved_group *groups, size_t n)
{
    for (size_t i = 0; groups != NULL && i < n; i++)
        ferry__free(groups[i].ids);
    ferry__free(groups);
}

ferry_status ferry__optim_groups_parse(ferry_optim_kind kind, const char *s,
                                       ferry__optim_saved_group **groups, size_t *n)
{
    cursor c = {s, 0};
    ferry__optim_saved_group *gs = NULL;
    size_t count = 0, cap = 0;
    ferry_status rc = eat(&c, '[') ? FERRY_OK : bad(&c, "expected a list of groups");
    if (rc == FERRY_OK && !eat(&c, ']')) {
        do {
            if (count == cap) {
                cap = cap ? cap * 2 : 4;
                ferry__optim_saved_group *ng = ferry__realloc(gs, cap * sizeof *ng);
                if (ng == NULL) {
                    rc = ferry__fail(FERRY_ENOMEM, "no memory for parameter groups");
                    break;
                }
                gs = ng;
            }
            memset(&gs[count], 0, sizeof gs[count]);
            rc = parse_group(&c, kind, count, &gs[count]);
            count++;
        } while (rc == FERRY_OK && eat(&c, ','));
        if (rc == FERRY_OK && !eat(&c, ']'))
            rc = bad(&c, "unterminated list of groups");
    }
    skip_ws(&c);
    if (rc == FERRY_OK && c.s[c.pos] != '\0')
        rc = bad(&c, "trailing text");
    if (rc != FERRY_OK) {
        ferry__optim_saved_groups_free(gs, count);
        return rc;
    }
    *groups = gs;
    *n = count;
    return FERRY_OK;
}
