/* Lists: the stealing builders (ferry_list_of, ferry_args), the borrowing one (ferry_list_from)
   and the in-place builder the decoder fills before it shares the list. */
#include "core/value_impl.h"

#include <stdarg.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/error.h"

ferry_value *ferry__list_new(size_t n)
{
    if (n > SIZE_MAX / sizeof(ferry_value *))
        return ferry__fail_null(FERRY_EINVAL, "list of %zu items is too long", n);
    ferry_value **items = NULL;
    if (n > 0) {
        items = ferry__calloc(n, sizeof *items);
        if (!items)
            return ferry__fail_null(FERRY_ENOMEM, "no memory for a list of %zu items", n);
    }
    ferry_value *v = ferry__value_alloc(FERRY_VALUE_LIST);
    if (!v) {
        ferry__free(items);
        return NULL;
    }
    v->u.list.items = items;
    v->u.list.len = n;
    return v;
}

void ferry__list_set(ferry_value *list, size_t i, ferry_value *item)
{
    if (!list || list->kind != FERRY_VALUE_LIST || i >= list->u.list.len) {
        ferry_value_release(item);
        return;
    }
    ferry_value_release(list->u.list.items[i]);
    list->u.list.items[i] = item;
}

/* Takes the n stolen items of a builder call; on any NULL all are released. */
static ferry_value *list_of_va(size_t n, va_list ap)
{
    ferry_value *list = ferry__list_new(n);
    size_t null_at = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        ferry_value *item = va_arg(ap, ferry_value *);
        if (!item && null_at == SIZE_MAX)
            null_at = i;
        if (list)
            list->u.list.items[i] = item;
        else
            ferry_value_release(item);
    }
    if (!list)
        return NULL; /* ferry__list_new recorded why */
    if (null_at != SIZE_MAX) {
        ferry_value_release(list);
        /* The NULL usually comes from a failed constructor in the argument list: keep its
           error, which says more than ours would. */
        if (ferry_last_status() == FERRY_OK)
            ferry__fail(FERRY_EINVAL, "list item %zu is NULL", null_at);
        return NULL;
    }
    return list;
}

ferry_value *ferry_list_of(size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    ferry_value *list = list_of_va(n, ap);
    va_end(ap);
    return list;
}

ferry_value *ferry_args(size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    ferry_value *list = list_of_va(n, ap);
    va_end(ap);
    return list;
}

ferry_value *ferry_list_from(ferry_value *const *items, size_t n)
{
    if (n > 0 && !items)
        return ferry__fail_null(FERRY_EINVAL, "NULL items for a list of %zu", n);
    for (size_t i = 0; i < n; i++) {
        if (!items[i])
            return ferry__fail_null(FERRY_EINVAL, "list item %zu is NULL", i);
    }
    ferry_value *list = ferry__list_new(n);
    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++)
        list->u.list.items[i] = ferry_value_retain(items[i]);
    return list;
}
