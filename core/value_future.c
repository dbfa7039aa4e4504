/* Futures in values (FERRY_VALUE_FUTURE): the kind ops through which values retain, release and
   format the futures they hold. A future value is equal only to a value of the same future (core
   compares the pointers; there are no equal ops), and the wire refuses it: a future never leaves
   the worker that made it. */
#include <stdio.h>

#include "core/error.h"
#include "core/value_impl.h"
#include "ferry/future.h"

static void *future_kind_retain(void *f)
{
    return ferry_future_retain(f);
}

static void future_kind_release(void *f)
{
    ferry_future_release(f);
}

/* As Python's repr shows a torch Future: the type and the address of the object. */
static size_t future_kind_format(const void *f, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "<torch.jit.Future object at %p>", f);
    return n > 0 ? (size_t)n : 0;
}

__attribute__((constructor)) static void future_value_kind(void)
{
    static const ferry__value_kind_ops ops = {
        .retain = future_kind_retain,
        .release = future_kind_release,
        .format = future_kind_format,
    };
    (void)ferry__value_register_kind(FERRY_VALUE_FUTURE, &ops); /* cannot fail for this kind */
}

ferry_value *ferry_value_of_future(ferry_future *f)
{
    return ferry__value_of_object(FERRY_VALUE_FUTURE, f);
}

ferry_future *ferry_value_as_future(const ferry_value *v)
{
    if (v && v->kind == FERRY_VALUE_FUTURE)
        return v->u.obj;
    return ferry__fail_null(FERRY_ETYPE, "ferry_value_as_future: expected a future value, got %s",
                            v ? ferry_kind_name(v->kind) : "NULL");
}
