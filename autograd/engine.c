/* The local autograd engine: graph nodes (builtin ones recorded by ops, custom ones with a
   callback backward), the backward run and ferry_backward. A run first walks the graph from its
   roots to count, for every reachable node, how many edges lead into it; a node becomes ready
   when that count drops to zero, so each node runs once, after every node that feeds it, with
   the sum of the gradients for each of its outputs. Nodes are freed iteratively, so long chains
   (an unrolled RNN) do not recurse once per node. */
#include "autograd/engine.h"

#include <stdatomic.h>
#include <string.h>

#include "autograd/variable.h"
#include "ferry/device.h"
#include "core/alloc.h"
#include "core/error.h"

static atomic_uint_fast64_t next_seq;

static const char second_backward_msg[] =
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward.";

static ferry__node *node_alloc(size_t n_inputs)
{
    ferry__node *node = ferry__calloc(1, sizeof *node);
    if (node == NULL)
        return ferry__fail_null(FERRY_ENOMEM, "autograd: out of memory");
    node->edges = ferry__calloc(n_inputs ? n_inputs : 1, sizeof *node->edges);
    node->meta = ferry__calloc(n_inputs ? n_inputs : 1, sizeof *node->meta);
    if (node->edges == NULL || node->meta == NULL) {
        ferry__free(node->edges);
        ferry__free(node->meta);
        ferry__free(node);
        return ferry__fail_null(FERRY_ENOMEM, "autograd: out of memory");
    }
    ferry__ref_init(&node->ref);
    node->seq = atomic_fetch_add(&next_seq, 1);
    node->op = -1;
    node->n_inputs = n_inputs;
    node->n_outputs = 1;
    return node;
}

/* Points edge i at whatever produces `input`'s gradient, and remembers its shape and dtype. */
static void set_edge(ferry__node *node, size_t i, ferry_tensor *input)
{
    if (input == NULL)
        return;
    ferry__input_meta *im = &node->meta[i];
    im->ndim = input->ndim;
    memcpy(im->sizes, input->sizes, sizeof(int64_t) * (size_t)input->ndim);
    im->dtype = input->dtype;
    im->device = input->device;
    if (!ferry_tensor_requires_grad(input))
        return;
    ferry__tensor_meta *m = ferry__meta_get(input);
    if (m->grad_fn != NULL) {
        node->edges[i].node = ferry__node_retain(m->grad_fn);
        node->edges[i].output_nr = m->output_nr;
    } else {
        node->edges[i].leaf = ferry_tensor_retain(input);
    }
}

ferry__node *ferry__node_retain(ferry__node *node)
{
    if (node != NULL)
        ferry__ref_inc(&node->ref);
    return node;
}

static void drop_saved(ferry__node *node)
{
    for (int i = 0; i < node->n_saved; i++) {
        ferry_tensor_release(node->saved[i]);
        node->saved[i] = NULL;
    }
}

void ferry__node_release(ferry__node *node)
{
    ferry__node *dead = NULL;
    if (node != NULL && ferry__ref_dec(&node->ref)) {
        node->free_next = NULL;
        dead = node;
    }
    while (dead != NULL) {
        ferry__node *n = dead;
        dead = n->free_next;
        for (size_t i = 0; i < n->n_inputs; i++) {
            ferry__node *next = n->edges[i].node;
            if (next != NULL && ferry__ref_dec(&next->ref)) {
                next->free_next = dead;
                dead = next;
            }
            ferry_tensor_release(n->edges[i].leaf);
        }
        drop_saved(n);
        if (n->custom_ctx_free)
            n->custom_ctx_free(n->custom_ctx);
        ferry__free(n->edges);
        ferry__free(n->meta);
        ferry__free(n);
    }
}

const char *ferry__node_name(const ferry__node *node)
{
    return node ? node->name : NULL;
}

ferry_status ferry__record_node(const ferry__op_record *rec, ferry_tensor *output)
{
    const ferry__formula *f = ferry__formula_for(rec->op);
    FERRY_ASSERT(f != NULL);
    ferry__node *node = node_alloc(rec->n_inputs);
    if (node == NULL)
        return FERRY_ENOMEM;
    node->op = rec->op;
    node->name = f->name;
    node->frees_saved = f->frees_saved;
    memcpy(node->scalars, rec->scalars, sizeof node->scalars);
    node->n_ints = rec->n_ints;
    memcpy(node->ints, rec->ints, sizeof node->ints);
    for (size_t i = 0; i < rec->n_inputs; i++)
        set_edge(node, i, rec->inputs[i]);
    for (int i = 0; i < rec->n_saved; i++) {
        /* An alias without autograd state: a saved output must not point back at its node. */
        node->saved[i] = ferry__alias(rec->saved[i]);
        node->n_saved = i + 1;
        if (node->saved[i] == NULL)
            goto fail;
    }
    ferry__tensor_meta *m = ferry__meta_ensure(output);
    if (m == NULL)
        goto fail;
    ferry__node_release(m->grad_fn);
    m->grad_fn = node;
    m->output_nr = 0;
    m->requires_grad = true;
    return FERRY_OK;
fail:
    ferry__node_release(node);
    return ferry_last_status();
}

ferry__node *ferry__node_new_custom(const char *name, size_t n_outputs, size_t n_inputs,
                                    ferry_tensor *const *inputs, ferry__node_backward_fn fn,
                                    void *ctx, void (*ctx_free)(void *ctx))
{
    if (fn == NULL || (n_inputs > 0 && inputs == NULL))
        return ferry__fail_null(FERRY_EINVAL, "custom node: missing backward or inputs");
    ferry__autograd_install();
    ferry__node *node = node_alloc(n_inputs);
    if (node == NULL)
        return NULL;
    node->name = name ? name : "CustomBackward";
    node->n_outputs = n_outputs;
    node->custom_fn = fn;
    node->custom_ctx = ctx;
    node->custom_ctx_free = ctx_free;
    for (size_t i = 0; i < n_inputs; i++)
        set_edge(node, i, inputs[i]);
    return node;
}

ferry_status ferry__accumulate_grad(ferry_tensor *leaf, ferry_tensor *grad)
{
    ferry__tensor_meta *m = ferry__meta_ensure(leaf);
    if (m == NULL)
        return FERRY_ENOMEM;
    if (m->grad == NULL) {
        /* A private copy: the incoming gradient may be shared with other edges. */
        m->grad = ferry_tensor_clone_data(grad);
        return m->grad ? FERRY_OK : ferry_last_status();
    }
    ferry_no_grad_enter();
    ferry_status rc = ferry_add_(m->grad, grad);
    ferry_no_grad_exit();
    return rc;
}

/* ---- one run ---- */

typedef struct {
    ferry__node *node; /* borrowed: the graph holds it while the run lasts */
    int64_t deps;
    ferry_tensor **grads; /* n_outputs, summed as they arrive */
    bool waits;           /* a pending node whose gradients have not been delivered */
} slot;

struct ferry__graph_task {
    slot *slots;
    size_t n, cap;
    size_t *table; /* open addressing: slot index + 1, 0 = empty */
    size_t table_cap;
    size_t *ready;
    size_t n_ready;
    size_t n_ran;
    bool retain_graph;
    ferry__leaf_sink_fn sink;
    void *sink_user;
    ferry_status failed; /* the first error; the task runs nothing more after it */
};
typedef ferry__graph_task run_state;

static size_t hash_ptr(const void *p, size_t cap)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull) & (cap - 1);
}

static ferry_status grow(run_state *r)
{
    size_t cap = r->cap ? r->cap * 2 : 64;
    slot *s = ferry__realloc(r->slots, cap * sizeof *s);
    size_t *ready = s ? ferry__realloc(r->ready, cap * sizeof *ready) : NULL;
    size_t *table = ready ? ferry__calloc(cap * 2, sizeof *table) : NULL;
    if (s)
        r->slots = s;
    if (ready)
        r->ready = ready;
    if (table == NULL)
        return ferry__fail(FERRY_ENOMEM, "autograd engine: out of memory");
    r->cap = cap;
    ferry__free(r->table);
    r->table = table;
    r->table_cap = cap * 2;
    for (size_t i = 0; i < r->n; i++) {
        size_t h = hash_ptr(r->slots[i].node, r->table_cap);
        while (r->table[h])
            h = (h + 1) & (r->table_cap - 1);
        r->table[h] = i + 1;
    }
    return FERRY_OK;
}

static slot *find(run_state *r, const ferry__node *node)
{
    size_t h = hash_ptr(node, r->table_cap);
    while (r->table[h]) {
        if (r->slots[r->table[h] - 1].node == node)
            return &r->slots[r->table[h] - 1];
        h = (h + 1) & (r->table_cap - 1);
    }
    return NULL;
}

/* Adds node when new; *added says whether it was. */
static slot *find_or_add(run_state *r, ferry__node *node, bool *added)
{
    slot *s = r->table ? find(r, node) : NULL;
    *added = s == NULL;
    if (s != NULL)
        return s;
    if (r->n == r->cap && grow(r) != FERRY_OK)
        return NULL;
    ferry_tensor **grads = ferry__calloc(node->n_outputs ? node->n_outputs : 1, sizeof *grads);
    if (grads == NULL)
        return ferry__fail_null(FERRY_ENOMEM, "autograd engine: out of memory");
    s = &r->slots[r->n];
    *s = (slot){.node = node, .deps = 0, .grads = grads};
    size_t h = hash_ptr(node, r->table_cap);
    while (r->table[h])
        h = (h + 1) & (r->table_cap - 1);
    r->table[h] = ++r->n;
    return s;
}

static ferry_status push(ferry__node ***stack, size_t *top, size_t *cap, ferry__node *node)
{
    if (*top == *cap) {
        size_t bigger_cap = *cap ? *cap * 2 : 64;
        ferry__node **bigger = ferry__realloc(*stack, bigger_cap * sizeof **stack);
        if (bigger == NULL)
            return ferry__fail(FERRY_ENOMEM, "autograd engine: out of memory");
        *stack = bigger;
        *cap = bigger_cap;
    }
    (*stack)[(*top)++] = node;
    return FERRY_OK;
}

/* Finds every node reachable from the starts (roots, then pending nodes) and counts the edges
   into each. */
static ferry_status discover(run_state *r, size_t n_starts, ferry__node *const *starts)
{
    ferry__node **stack = NULL;
    size_t top = 0, cap = 0;
    ferry_status rc = FERRY_OK;
    bool added;
    for (size_t i = 0; rc == FERRY_OK && i < n_starts; i++) {
        if (find_or_add(r, starts[i], &added) == NULL)
            rc = ferry_last_status();
        else if (added)
            rc = push(&stack, &top, &cap, starts[i]);
    }
    while (rc == FERRY_OK && top > 0) {
        ferry__node *node = stack[--top];
        for (size_t e = 0; rc == FERRY_OK && e < node->n_inputs; e++) {
            ferry__node *next = node->edges[e].node;
            if (next == NULL)
                continue;
            slot *s = find_or_add(r, next, &added);
            if (s == NULL)
                rc = ferry_last_status();
            else if (s->deps++, added)
                rc = push(&stack, &top, &cap, next);
        }
    }
    ferry__free(stack);
    return rc;
}

/* Sums g into *acc (out of place: g may be shared with other edges). Steals g. */
static ferry_status add_into(ferry_tensor **acc, ferry_tensor *g)
{
    if (*acc == NULL) {
        *acc = g;
        return FERRY_OK;
    }
    ferry_tensor *sum = ferry_add(*acc, g);
    ferry_tensor_release(g);
    if (sum == NULL)
        return ferry_last_status();
    ferry_tensor_release(*acc);
    *acc = sum;
    return FERRY_OK;
}

/* Whether the input's shape broadcasts to g's, so summing g down to it is meaningful. */
static bool sums_to(const ferry__input_meta *im, const ferry_tensor *g)
{
    int lead = g->ndim - im->ndim;
    if (lead < 0)
        return false;
    for (int i = 0; i < im->ndim; i++)
        if (im->sizes[i] != 1 && im->sizes[i] != g->sizes[lead + i])
            return false;
    return true;
}

/* Brings a formula's gradient to its input's dtype and shape (summing broadcast dims, as torch's
   validate_outputs). Steals g; NULL on failure. */
static ferry_tensor *conform(const ferry__node *node, size_t i, ferry_tensor *g)
{
    const ferry__input_meta *im = &node->meta[i];
    char got[128], want[128];
    ferry_tensor *out = g;
    if (im->ndim != g->ndim || memcmp(im->sizes, g->sizes, sizeof(int64_t) * (size_t)im->ndim) != 0) {
        if (sums_to(im, g))
            out = ferry__sum_to(g, im->ndim, im->sizes);
        else
            out = ferry__fail_null(FERRY_EINVAL,
                                   "Function %s returned an invalid gradient at index %zu - got %s "
                                   "but expected shape compatible with %s",
                                   node->name, i, ferry__shape_str(g->ndim, g->sizes, got, sizeof got),
                                   ferry__shape_str(im->ndim, im->sizes, want, sizeof want));
        ferry_tensor_release(g);
        if (out == NULL)
            return NULL;
        g = out;
    }
    if (g->device.type != im->device.type ||
        (g->device.type != FERRY_CPU && g->device.index != im->device.index)) {
        if (g->ndim == 0 && g->device.type == FERRY_CPU) { /* torch moves a CPU scalar over */
            out = ferry_tensor_to(g, im->device);
        } else {
            ferry_device_format(im->device, want, sizeof want);
            ferry_device_format(g->device, got, sizeof got);
            out = ferry__fail_null(FERRY_EINVAL,
                                   "Function %s returned an invalid gradient at index %zu - "
                                   "expected device %s but got %s", node->name, i, want, got);
        }
        ferry_tensor_release(g);
        if (out == NULL)
            return NULL;
        g = out;
    }
    if (g->dtype != im->dtype) {
        out = ferry_tensor_to_dtype(g, im->dtype);
        ferry_tensor_release(g);
    }
    return out;
}

/* Calls the node's backward on the gradients gathered for its outputs. */
static ferry_status call_backward(ferry__node *node, ferry_tensor **grads, ferry_tensor **grad_inputs)
{
    if (node->released && node->frees_saved)
        return ferry__fail(FERRY_EINVAL, "%s", second_backward_msg);
    if (node->custom_fn != NULL)
        return node->custom_fn(node->custom_ctx, node->n_outputs, grads, node->n_inputs, grad_inputs);
    if (grads[0] == NULL) /* nothing reached this node: nothing flows on */
        return FERRY_OK;
    return ferry__formula_for(node->op)->backward(node, grads, grad_inputs);
}

/* Hands gradient i of a node that ran to its edge. Steals g (may be NULL). */
static ferry_status pass_on(run_state *r, ferry__node *node, size_t i, ferry_tensor *g)
{
    const ferry__edge *e = &node->edges[i];
    if (g != NULL && !ferry__needs_grad(node, i)) {
        ferry_tensor_release(g);
        g = NULL;
    }
    if (g != NULL && (g = conform(node, i, g)) == NULL)
        return ferry_last_status();
    ferry_status rc = FERRY_OK;
    if (e->leaf != NULL && g != NULL)
        rc = r->sink ? r->sink(r->sink_user, e->leaf, g) : ferry__accumulate_grad(e->leaf, g);
    if (e->node == NULL) {
        ferry_tensor_release(g);
        return rc;
    }
    slot *s = find(r, e->node);
    FERRY_ASSERT(s != NULL && s->deps > 0);
    if (g != NULL && rc == FERRY_OK)
        rc = add_into(&s->grads[e->output_nr], g);
    else
        ferry_tensor_release(g);
    if (--s->deps == 0)
        r->ready[r->n_ready++] = (size_t)(s - r->slots);
    return rc;
}

static ferry_status run_node(run_state *r, size_t idx)
{
    ferry__node *node = r->slots[idx].node;
    ferry_tensor **grads = r->slots[idx].grads;
    ferry_tensor **grad_inputs = ferry__calloc(node->n_inputs ? node->n_inputs : 1, sizeof *grad_inputs);
    if (grad_inputs == NULL)
        return ferry__fail(FERRY_ENOMEM, "autograd engine: out of memory");
    r->n_ran++;
    ferry_status rc = call_backward(node, grads, grad_inputs);
    if (!r->retain_graph && rc == FERRY_OK) {
        drop_saved(node);
        node->released = true;
    }
    for (size_t o = 0; o < node->n_outputs; o++) {
        ferry_tensor_release(grads[o]);
        grads[o] = NULL;
    }
    for (size_t i = 0; i < node->n_inputs; i++) {
        if (rc == FERRY_OK)
            rc = pass_on(r, node, i, grad_inputs[i]);
        else
            ferry_tensor_release(grad_inputs[i]);
    }
    ferry__free(grad_inputs);
    return rc;
}

/* The ready node created last (torch's CPU ready queue order). */
static size_t pop_ready(run_state *r)
{
    size_t best = 0;
    for (size_t i = 1; i < r->n_ready; i++)
        if (r->slots[r->ready[i]].node->seq > r->slots[r->ready[best]].node->seq)
            best = i;
    size_t idx = r->ready[best];
    r->ready[best] = r->ready[--r->n_ready];
    return idx;
}

static ferry_status seed(run_state *r, size_t n_roots, const ferry__engine_root *roots,
                         size_t n_pending, ferry__node *const *pending)
{
    for (size_t i = 0; i < n_roots; i++) {
        if (roots[i].output_nr >= roots[i].node->n_outputs)
            return ferry__fail(FERRY_EINVAL, "backward: output %zu of %s does not exist",
                               roots[i].output_nr, roots[i].node->name);
        slot *s = find(r, roots[i].node);
        ferry_status rc = roots[i].grad ? add_into(&s->grads[roots[i].output_nr],
                                                   ferry_tensor_retain(roots[i].grad))
                                        : FERRY_OK;
        if (rc != FERRY_OK)
            return rc;
    }
    for (size_t i = 0; i < n_pending; i++) { /* each waits for its delivery too */
        slot *s = find(r, pending[i]);
        if (!s->waits)
            s->deps++;
        s->waits = true;
    }
    for (size_t i = 0; i < r->n; i++) /* roots no other start leads to */
        if (r->slots[i].deps == 0)
            r->ready[r->n_ready++] = i;
    return FERRY_OK;
}

void ferry__graph_task_free(ferry__graph_task *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++) {
        for (size_t o = 0; o < r->slots[i].node->n_outputs; o++)
            ferry_tensor_release(r->slots[i].grads[o]);
        ferry__free(r->slots[i].grads);
    }
    ferry__free(r->slots);
    ferry__free(r->table);
    ferry__free(r->ready);
    ferry__free(r);
}

ferry__graph_task *ferry__graph_task_new(size_t n_roots, const ferry__engine_root *roots,
                                         size_t n_pending, ferry__node *const *pending,
                                         bool retain_graph, ferry__leaf_sink_fn sink,
                                         void *sink_user)
{
    for (size_t i = 0; i < n_roots; i++)
        if (roots == NULL || roots[i].node == NULL)
            return ferry__fail_null(FERRY_EINVAL, "backward: root %zu has no node", i);
    for (size_t i = 0; i < n_pending; i++)
        if (pending == NULL || pending[i] == NULL)
            return ferry__fail_null(FERRY_EINVAL, "backward: pending node %zu is NULL", i);
    run_state *r = ferry__calloc(1, sizeof *r);
    ferry__node **starts = ferry__calloc(n_roots + n_pending + 1, sizeof *starts);
    if (r == NULL || starts == NULL) {
        ferry__free(r);
        ferry__free(starts);
        return ferry__fail_null(FERRY_ENOMEM, "autograd engine: out of memory");
    }
    r->retain_graph = retain_graph;
    r->sink = sink;
    r->sink_user = sink_user;
    for (size_t i = 0; i < n_roots; i++)
        starts[i] = roots[i].node;
    for (size_t i = 0; i < n_pending; i++)
        starts[n_roots + i] = pending[i];
    ferry_status rc = discover(r, n_roots + n_pending, starts);
    ferry__free(starts);
    if (rc == FERRY_OK)
        rc = seed(r, n_roots, roots, n_pending, pending);
    if (rc != FERRY_OK) {
        ferry__graph_task_free(r);
        return NULL;
    }
    return r;
}

ferry_status ferry__graph_task_deliver(ferry__graph_task *r, ferry__node *node, size_t n,
                                       ferry_tensor *const *grads)
{
    slot *s = r->table ? find(r, node) : NULL;
    if (s == NULL || !s->waits)
        return ferry__fail(FERRY_EINVAL, "backward: %s is not waiting for gradients",
                           node ? node->name : "(null)");
    if (n > node->n_outputs)
        return ferry__fail(FERRY_EINVAL, "backward: %zu gradients for the %zu outputs of %s", n,
                           node->n_outputs, node->name);
    for (size_t i = 0; i < n; i++) {
        if (grads[i] == NULL)
            continue;
        ferry_status rc = add_into(&s->grads[i], ferry_tensor_retain(grads[i]));
        if (rc != FERRY_OK)
            return rc;
    }
    s->waits = false;
    if (--s->deps == 0)
        r->ready[r->n_ready++] = (size_t)(s - r->slots);
    return FERRY_OK;
}

ferry_status ferry__graph_task_run(ferry__graph_task *r)
{
    if (r->failed != FERRY_OK)
        return r->failed;
    ferry_no_grad_enter();
    ferry_status rc = FERRY_OK;
    while (rc == FERRY_OK && r->n_ready > 0)
        rc = run_node(r, pop_ready(r));
    ferry_no_grad_exit();
    r->failed = rc;
    return rc;
}

bool ferry__graph_task_finished(const ferry__graph_task *r)
{
    return r->failed == FERRY_OK && r->n_ran == r->n;
}

bool ferry__graph_task_reaches(ferry__graph_task *r, const ferry__node *node)
{
    return r->table != NULL && find(r, node) != NULL;
}

ferry_status ferry__engine_run(size_t n_roots, const ferry__engine_root *roots, bool retain_graph,
                               ferry__leaf_sink_fn sink, void *sink_user)
{
    ferry__graph_task *r = ferry__graph_task_new(n_roots, roots, 0, NULL, retain_graph, sink,
                                                 sink_user);
    if (r == NULL)
        return ferry_last_status();
    ferry_status rc = ferry__graph_task_run(r);
    ferry__graph_task_free(r);
    return rc;
}

/* The gradient backward starts from: ones for a one-element root, else the given one. */
static ferry_tensor *root_grad(ferry_tensor *root, ferry_tensor *grad)
{
    char sa[128], sb[128];
    if (grad == NULL) {
        if (ferry_tensor_numel(root) != 1)
            return ferry__fail_null(FERRY_EINVAL, "grad can be implicitly created only for scalar outputs");
        return ferry__full_on(root->ndim, root->sizes, 1.0, root->dtype, root->device);
    }
    if (!ferry__same_shape(root, grad))
        return ferry__fail_null(FERRY_EINVAL,
                                "Mismatch in shape: grad_output[0] has a shape of %s and output[0] "
                                "has a shape of %s.",
                                ferry__shape_str(grad->ndim, grad->sizes, sa, sizeof sa),
                                ferry__shape_str(root->ndim, root->sizes, sb, sizeof sb));
    if (grad->device.type != root->device.type ||
        (grad->device.type != FERRY_CPU && grad->device.index != root->device.index)) {
        ferry_device_format(grad->device, sa, sizeof sa);
        ferry_device_format(root->device, sb, sizeof sb);
        return ferry__fail_null(FERRY_EINVAL, "invalid gradient at index 0 - expected device %s "
                                "but got %s", sb, sa);
    }
    return ferry__to_dtype_ref(grad, root->dtype);
}

ferry_status ferry_backward(ferry_tensor *root, ferry_tensor *grad, bool retain_graph)
{
    if (root == NULL)
        return ferry__fail(FERRY_EINVAL, "backward: root is NULL");
    if (!ferry_tensor_requires_grad(root))
        return ferry__fail(FERRY_EINVAL,
                           "element 0 of tensors does not require grad and does not have a grad_fn");
    ferry_tensor *g = root_grad(root, grad);
    if (g == NULL)
        return ferry_last_status();
    ferry_status rc;
    size_t output_nr = 0;
    ferry__node *node = ferry__tensor_grad_fn(root, &output_nr);
    if (node == NULL) { /* a leaf: its gradient is the seed itself */
        rc = ferry__accumulate_grad(root, g);
    } else {
        ferry__engine_root r = {.node = node, .output_nr = output_nr, .grad = g};
        rc = ferry__engine_run(1, &r, retain_graph, NULL, NULL);
        ferry__node_release(node);
    }
    ferry_tensor_release(g);
    return rc;
}

const ferry__formula *ferry__formula_for(int op)
{
    const ferry__formula *f = ferry__formulas_elementwise(op);
    if (f == NULL)
        f = ferry__formulas_reduce(op);
    if (f == NULL)
        f = ferry__formulas_shape(op);
    return f;
}
