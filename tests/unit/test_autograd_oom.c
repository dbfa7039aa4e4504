/* Allocation failures anywhere in a forward pass and its backward: each step either succeeds or
   fails with FERRY_ENOMEM, without crashing or leaking (the sanitizer build checks the latter). */
#include "core/alloc.h"
#include "test_ops_util.h"

#define F64 FERRY_FLOAT64
#define I64 FERRY_INT64

/* A small model step: linear, relu, cross_entropy, backward. Returns its status. */
static ferry_status step(ferry_tensor *x, ferry_tensor *w, ferry_tensor *b, ferry_tensor *tg)
{
    ferry_status rc = FERRY_ENOMEM;
    ferry_tensor *h = ferry_linear(x, w, b);
    ferry_tensor *r = h ? ferry_relu(h) : NULL;
    ferry_tensor *s = r ? ferry_softmax(r, 1) : NULL;
    ferry_tensor *m = s ? ferry_add(s, r) : NULL;
    ferry_tensor *loss = m ? ferry_cross_entropy(m, tg, FERRY_REDUCTION_MEAN) : NULL;
    if (loss != NULL)
        rc = ferry_backward(loss, NULL, false);
    else
        rc = ferry_last_status();
    ferry_tensor *all[] = {h, r, s, m, loss};
    for (size_t k = 0; k < 5; k++)
        ferry_tensor_release(all[k]);
    return rc;
}

Test(autograd_oom, fails_cleanly_when_any_allocation_fails, .timeout = 20)
{
    ferry_tensor *x = MK(F64, S(3, 4), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    ferry_tensor *w = leaf(MK(F64, S(2, 4), 0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8));
    ferry_tensor *b = leaf(MK(F64, S(2), 0.5, -0.5));
    ferry_tensor *tg = MK(I64, S(3), 0, 1, 1);
    bool succeeded = false;
    for (long nth = 1; nth < 400 && !succeeded; nth++) {
        ferry__alloc_fail_after(nth, 1);
        ferry_status rc = step(x, w, b, tg);
        ferry__alloc_fail_after(0, 0);
        cr_assert(rc == FERRY_OK || rc == FERRY_ENOMEM, "allocation %ld: %s: %s", nth,
                  ferry_strerror(rc), ferry_last_error());
        succeeded = rc == FERRY_OK;
    }
    cr_assert(succeeded, "the step never got through");
    ferry_tensor *g = ferry_tensor_grad(w);
    cr_assert_not_null(g);
    ferry_tensor *all[] = {x, w, b, tg, g};
    for (size_t k = 0; k < 5; k++)
        ferry_tensor_release(all[k]);
}
