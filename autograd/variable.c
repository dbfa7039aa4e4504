/* Per-tensor autograd state (requires_grad, .grad, grad_fn and output index), grad mode, the
   public calls of ferry/autograd.h other than backward, and the hook table through which the ops
   in tensor/ record nodes. The hooks are installed from a constructor (the static library is one
   prelinked object, so it always runs): the wire codec sets requires_grad on received tensors
   through tensor/'s table before any local op may have asked. */
#include "autograd/variable.h"

#include <pthread.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

/* Depth of nested no-grad scopes on this thread. */
static _Thread_local int no_grad_depth;

void ferry_no_grad_enter(void)
{
    no_grad_depth++;
}

void ferry_no_grad_exit(void)
{
    if (no_grad_depth > 0)
        no_grad_depth--;
}

bool ferry_is_grad_enabled(void)
{
    return no_grad_depth == 0;
}

static void meta_free(void *p)
{
    ferry__tensor_meta *m = p;
    if (m == NULL)
        return;
    ferry_tensor_release(m->grad);
    ferry__node_release(m->grad_fn);
    ferry__free(m);
}

ferry__tensor_meta *ferry__meta_get(const ferry_tensor *t)
{
    return t ? (ferry__tensor_meta *)t->autograd : NULL;
}

ferry__tensor_meta *ferry__meta_ensure(ferry_tensor *t)
{
    if (t->autograd == NULL) {
        ferry__autograd_install();
        t->autograd = ferry__calloc(1, sizeof(ferry__tensor_meta));
        if (t->autograd == NULL)
            return ferry__fail_null(FERRY_ENOMEM, "autograd: out of memory");
    }
    return t->autograd;
}

bool ferry_tensor_requires_grad(const ferry_tensor *t)
{
    const ferry__tensor_meta *m = ferry__meta_get(t);
    return m != NULL && (m->requires_grad || m->grad_fn != NULL);
}

bool ferry_tensor_is_leaf(const ferry_tensor *t)
{
    const ferry__tensor_meta *m = ferry__meta_get(t);
    return m == NULL || m->grad_fn == NULL;
}

ferry_status ferry_tensor_set_requires_grad(ferry_tensor *t, bool requires_grad)
{
    if (t == NULL)
        return ferry__fail(FERRY_EINVAL, "requires_grad_: tensor is NULL");
    if (!ferry_tensor_is_leaf(t)) {
        if (requires_grad)
            return FERRY_OK;
        return ferry__fail(FERRY_EINVAL,
                           "you can only change requires_grad flags of leaf variables. If you want "
                           "to use a computed variable in a subgraph that doesn't require "
                           "differentiation use var_no_grad = var.detach().");
    }
    if (requires_grad && !ferry__is_floating(t->dtype))
        return ferry__fail(FERRY_EINVAL, "only Tensors of floating point dtype can require gradients");
    if (!requires_grad && t->autograd == NULL)
        return FERRY_OK;
    ferry__tensor_meta *m = ferry__meta_ensure(t);
    if (m == NULL)
        return FERRY_ENOMEM;
    m->requires_grad = requires_grad;
    return FERRY_OK;
}

ferry_tensor *ferry_tensor_grad(ferry_tensor *t)
{
    ferry__tensor_meta *m = ferry__meta_get(t);
    return m && m->grad ? ferry_tensor_retain(m->grad) : NULL;
}

ferry_status ferry_tensor_set_grad(ferry_tensor *t, ferry_tensor *grad)
{
    if (t == NULL)
        return ferry__fail(FERRY_EINVAL, "set_grad: tensor is NULL");
    bool other_device = grad != NULL &&
                        (grad->device.type != t->device.type ||
                         (t->device.type != FERRY_CPU && grad->device.index != t->device.index));
    if (grad != NULL && (!ferry__same_shape(t, grad) || grad->dtype != t->dtype || other_device))
        return ferry__fail(FERRY_EINVAL, grad->dtype != t->dtype
                                             ? "assigned grad has data of a different type"
                                         : other_device
                                             ? "assigned grad has data located on a different device"
                                             : "assigned grad has data of a different size");
    if (grad == NULL && t->autograd == NULL)
        return FERRY_OK;
    ferry__tensor_meta *m = ferry__meta_ensure(t);
    if (m == NULL)
        return FERRY_ENOMEM;
    ferry_tensor *old = m->grad;
    m->grad = grad ? ferry_tensor_retain(grad) : NULL;
    ferry_tensor_release(old);
    return FERRY_OK;
}

void ferry_tensor_zero_grad(ferry_tensor *t)
{
    ferry__tensor_meta *m = ferry__meta_get(t);
    if (m != NULL) {
        ferry_tensor_release(m->grad);
        m->grad = NULL;
    }
}

const char *ferry_tensor_grad_fn_name(const ferry_tensor *t)
{
    const ferry__tensor_meta *m = ferry__meta_get(t);
    return m && m->grad_fn ? m->grad_fn->name : NULL;
}

ferry__node *ferry__tensor_grad_fn(const ferry_tensor *t, size_t *output_nr)
{
    const ferry__tensor_meta *m = ferry__meta_get(t);
    if (m == NULL || m->grad_fn == NULL)
        return NULL;
    if (output_nr)
        *output_nr = m->output_nr;
    return ferry__node_retain(m->grad_fn);
}

ferry_status ferry__node_attach_output(ferry__node *node, size_t output_nr, ferry_tensor *t)
{
    if (node == NULL || t == NULL || output_nr >= node->n_outputs)
        return ferry__fail(FERRY_EINVAL, "attach_output: bad node, tensor or output %zu", output_nr);
    ferry__tensor_meta *m = ferry__meta_get(t);
    if (m != NULL && m->requires_grad && m->grad_fn == NULL)
        return ferry__fail(FERRY_EINVAL, "attach_output: the tensor is a leaf that requires grad");
    m = ferry__meta_ensure(t);
    if (m == NULL)
        return FERRY_ENOMEM;
    ferry__node *old = m->grad_fn;
    m->grad_fn = ferry__node_retain(node);
    m->output_nr = output_nr;
    m->requires_grad = true;
    ferry__node_release(old);
    return FERRY_OK;
}

/* ---- the hooks tensor/ calls ---- */

static bool hook_should_record(size_t n, ferry_tensor *const *inputs)
{
    if (!ferry_is_grad_enabled())
        return false;
    for (size_t i = 0; i < n; i++)
        if (ferry_tensor_requires_grad(inputs[i]))
            return true;
    return false;
}

static ferry_status hook_check_inplace(ferry_tensor *t, size_t n, ferry_tensor *const *others)
{
    if (!ferry_is_grad_enabled())
        return FERRY_OK;
    if (ferry_tensor_requires_grad(t) && ferry_tensor_is_leaf(t))
        return ferry__fail(FERRY_EINVAL,
                           "a leaf Variable that requires grad is being used in an in-place operation.");
    bool needs = ferry_tensor_requires_grad(t);
    for (size_t i = 0; i < n; i++)
        needs |= ferry_tensor_requires_grad(others[i]);
    if (needs)
        return ferry__fail(FERRY_ENOTSUP, "in-place operations are not recorded by ferry's autograd; "
                                          "run them under ferry_no_grad_enter()");
    return FERRY_OK;
}

static const ferry__autograd_hooks hooks = {
    .should_record = hook_should_record,
    .record = ferry__record_node,
    .check_inplace = hook_check_inplace,
};

static const ferry__tensor_autograd_ops tensor_ops = {
    .free = meta_free,
    .requires_grad = ferry_tensor_requires_grad,
    .set_requires_grad = ferry_tensor_set_requires_grad,
};

static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void install(void)
{
    ferry__tensor_set_autograd_ops(&tensor_ops);
    ferry__ops_set_autograd_hooks(&hooks);
}

void ferry__autograd_install(void)
{
    pthread_once(&install_once, install);
}

__attribute__((constructor)) static void autograd_register(void)
{
    ferry__autograd_install();
}
