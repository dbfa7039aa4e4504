/* Backward formulas of matmul and the shape ops: products with the other operand transposed
   (as views, so BLAS reads them in place), reshapes back to the input's shape, and slices or
   scatter-adds for the ops that pick parts of their input. */
#include "autograd/engine.h"

#include <string.h>

#include "core/error.h"

static ferry_status one(ferry_tensor **out)
{
    return out[0] ? FERRY_OK : ferry_last_status();
}

/* Hands the built input gradient gi to out[0] when rc is FERRY_OK, else drops it; returns rc. */
static ferry_status keep(ferry_tensor *gi, ferry_status rc, ferry_tensor **out)
{
    if (rc != FERRY_OK) {
        ferry_tensor_release(gi);
        return rc;
    }
    out[0] = gi;
    return FERRY_OK;
}

/* The output gradient with the dims matmul dropped for 1-D operands put back as size 1. */
static ferry_tensor *full_grad(ferry_tensor *g, bool a_vec, bool b_vec)
{
    ferry_tensor *r = ferry_tensor_retain(g);
    if (r != NULL && a_vec) {
        ferry_tensor *u = ferry_unsqueeze(r, b_vec ? r->ndim : r->ndim - 1);
        ferry_tensor_release(r);
        r = u;
    }
    if (r != NULL && b_vec) {
        ferry_tensor *u = ferry_unsqueeze(r, r->ndim);
        ferry_tensor_release(r);
        r = u;
    }
    return r;
}

/* x @ y^T (x_t false) or x^T @ y (x_t true) over the last two dims, squeezing `squeeze_dim` when
   it is not 0 (a 1-D operand's placeholder). */
static ferry_tensor *product(ferry_tensor *x, ferry_tensor *y, bool x_t, int squeeze_dim)
{
    ferry_tensor *t = x_t ? ferry_transpose(x, -1, -2) : ferry_transpose(y, -1, -2);
    ferry_tensor *p = t ? (x_t ? ferry_matmul(t, y) : ferry_matmul(x, t)) : NULL;
    ferry_tensor_release(t);
    if (p == NULL || squeeze_dim == 0)
        return p;
    ferry_tensor *s = ferry_squeeze_dim(p, squeeze_dim);
    ferry_tensor_release(p);
    return s;
}

static ferry_status matmul_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    ferry_tensor *a = node->saved[0], *b = node->saved[1], *g = grads[0];
    bool a_vec = a->ndim == 1, b_vec = b->ndim == 1;
    if (a_vec && b_vec) { /* dot: g is 0-dim */
        if (ferry__needs_grad(node, 0) && (out[0] = ferry_mul(g, b)) == NULL)
            return ferry_last_status();
        if (ferry__needs_grad(node, 1) && (out[1] = ferry_mul(g, a)) == NULL)
            return ferry_last_status();
        return FERRY_OK;
    }
    ferry_tensor *ga = full_grad(g, a_vec, b_vec);
    ferry_tensor *am = ga && a_vec ? ferry_unsqueeze(a, 0) : ferry_tensor_retain(a);
    ferry_tensor *bm = am && b_vec ? ferry_unsqueeze(b, -1) : ferry_tensor_retain(b);
    ferry_status rc = ga && am && bm ? FERRY_OK : ferry_last_status();
    if (rc == FERRY_OK && ferry__needs_grad(node, 0) &&
        (out[0] = product(ga, bm, false, a_vec ? -2 : 0)) == NULL)
        rc = ferry_last_status();
    if (rc == FERRY_OK && ferry__needs_grad(node, 1) &&
        (out[1] = product(am, ga, true, b_vec ? -1 : 0)) == NULL)
        rc = ferry_last_status();
    ferry_tensor_release(ga);
    ferry_tensor_release(am);
    ferry_tensor_release(bm);
    return rc;
}

static ferry_status reshape_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_tensor_reshape(grads[0], node->meta[0].ndim, node->meta[0].sizes);
    return one(out);
}

static ferry_status transpose_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    out[0] = ferry_tensor_transpose(grads[0], (int)node->ints[0], (int)node->ints[1]);
    return one(out);
}

static ferry_status narrow_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    const ferry__input_meta *im = &node->meta[0];
    int d = (int)node->ints[0];
    ferry_tensor *gi = ferry__zeros_on(im->ndim, im->sizes, grads[0]->dtype, im->device);
    ferry_tensor *part = gi ? ferry_tensor_narrow(gi, d, node->ints[1], grads[0]->sizes[d]) : NULL;
    ferry_status rc = part ? ferry_tensor_copy_(part, grads[0]) : ferry_last_status();
    ferry_tensor_release(part);
    return keep(gi, rc, out);
}

static ferry_status cat_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    int d = (int)node->ints[0];
    int64_t at = 0;
    for (size_t i = 0; i < node->n_inputs; i++) {
        const ferry__input_meta *im = &node->meta[i];
        if (im->ndim == 1 && im->sizes[0] == 0 && grads[0]->ndim != 1)
            continue; /* a skipped legacy empty input */
        int64_t len = im->sizes[d];
        if (ferry__needs_grad(node, i)) {
            ferry_tensor *part = ferry_tensor_narrow(grads[0], d, at, len);
            out[i] = part ? ferry_tensor_contiguous(part) : NULL;
            ferry_tensor_release(part);
            if (out[i] == NULL)
                return ferry_last_status();
        }
        at += len;
    }
    return FERRY_OK;
}

static ferry_status stack_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    int d = (int)node->ints[0];
    for (size_t i = 0; i < node->n_inputs; i++) {
        if (!ferry__needs_grad(node, i))
            continue;
        ferry_tensor *part = ferry_tensor_narrow(grads[0], d, (int64_t)i, 1);
        out[i] = part ? ferry_tensor_reshape(part, node->meta[i].ndim, node->meta[i].sizes) : NULL;
        ferry_tensor_release(part);
        if (out[i] == NULL)
            return ferry_last_status();
    }
    return FERRY_OK;
}

static ferry_status index_select_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    const ferry__input_meta *im = &node->meta[0];
    ferry_tensor *gi = ferry__zeros_on(im->ndim, im->sizes, grads[0]->dtype, im->device);
    ferry_tensor *g = gi == NULL       ? NULL
                      : im->ndim == 0 ? ferry_tensor_reshape(grads[0], 0, NULL)
                                      : ferry_tensor_retain(grads[0]);
    ferry_status rc = g ? FERRY_OK : ferry_last_status();
    if (rc == FERRY_OK && im->ndim == 0)
        rc = ferry_add_(gi, g); /* a 0-dim input: every index picked the one element */
    else if (rc == FERRY_OK)
        rc = ferry__index_add_raw(gi, (int)node->ints[0], node->saved[0], g);
    ferry_tensor_release(g);
    return keep(gi, rc, out);
}

static ferry_status embedding_backward(ferry__node *node, ferry_tensor *const *grads, ferry_tensor **out)
{
    const ferry__input_meta *im = &node->meta[0];
    int64_t len = ferry_tensor_numel(node->saved[0]), rows[2] = {len, im->sizes[1]};
    ferry_tensor *gi = ferry__zeros_on(im->ndim, im->sizes, grads[0]->dtype, im->device);
    ferry_tensor *idx = gi ? ferry_tensor_reshape(node->saved[0], 1, &len) : NULL;
    ferry_tensor *g = idx ? ferry_tensor_reshape(grads[0], 2, rows) : NULL;
    ferry_status rc = g ? ferry__index_add_raw(gi, 0, idx, g) : ferry_last_status();
    ferry_tensor_release(idx);
    ferry_tensor_release(g);
    return keep(gi, rc, out);
}

static const ferry__formula formulas[FERRY__OP_COUNT] = {
    [FERRY__OP_MATMUL] = {"MmBackward0", true, matmul_backward},
    [FERRY__OP_RESHAPE] = {"ViewBackward0", false, reshape_backward},
    [FERRY__OP_UNSQUEEZE] = {"UnsqueezeBackward0", false, reshape_backward},
    [FERRY__OP_SQUEEZE] = {"SqueezeBackward1", false, reshape_backward},
    [FERRY__OP_TRANSPOSE] = {"TransposeBackward0", false, transpose_backward},
    [FERRY__OP_NARROW] = {"SliceBackward0", false, narrow_backward},
    [FERRY__OP_CAT] = {"CatBackward0", false, cat_backward},
    [FERRY__OP_STACK] = {"StackBackward0", false, stack_backward},
    [FERRY__OP_INDEX_SELECT] = {"IndexSelectBackward0", true, index_select_backward},
    [FERRY__OP_EMBEDDING] = {"EmbeddingBackward0", true, embedding_backward},
};

const ferry__formula *ferry__formulas_shape(int op)
{
    if (op < 0 || op >= FERRY__OP_COUNT || formulas[op].name == NULL)
        return NULL;
    return &formulas[op];
}
