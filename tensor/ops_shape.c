/* Shape ops with autograd: reshape, transpose, narrow, unsqueeze, squeeze, cat, stack,
   index_select, clone and detach. The views come from the view functions of tensor/; this file
   adds the graph records and the ops that copy (cat, stack, index_select). */
#include "tensor/ops_internal.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "tensor/device.h"

ferry_tensor *ferry_reshape(ferry_tensor *t, int ndim, const int64_t *sizes)
{
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "reshape: tensor is NULL");
    ferry__op_record rec = {.op = FERRY__OP_RESHAPE, .n_inputs = 1, .inputs = &t};
    return ferry__ops_record(ferry_tensor_reshape(t, ndim, sizes), &rec);
}

ferry_tensor *ferry_transpose(ferry_tensor *t, int dim0, int dim1)
{
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "transpose: tensor is NULL");
    ferry__op_record rec = {.op = FERRY__OP_TRANSPOSE, .n_inputs = 1, .inputs = &t, .n_ints = 2,
                            .ints = {dim0, dim1}};
    return ferry__ops_record(ferry_tensor_transpose(t, dim0, dim1), &rec);
}

ferry_tensor *ferry_narrow(ferry_tensor *t, int dim, int64_t start, int64_t length)
{
    int d;
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "narrow: tensor is NULL");
    ferry_tensor *out = ferry_tensor_narrow(t, dim, start, length);
    if (out == NULL || ferry__wrap_dim(dim, t->ndim, &d) != FERRY_OK)
        return out;
    if (start < 0)
        start += t->sizes[d];
    ferry__op_record rec = {.op = FERRY__OP_NARROW, .n_inputs = 1, .inputs = &t, .n_ints = 2,
                            .ints = {d, start}};
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_unsqueeze(ferry_tensor *t, int dim)
{
    int d;
    int64_t sizes[FERRY_MAX_DIMS], strides[FERRY_MAX_DIMS];
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "unsqueeze: tensor is NULL");
    if (t->ndim >= FERRY_MAX_DIMS)
        return ferry__fail_null(FERRY_EINVAL, "unsqueeze: more than %d dims", FERRY_MAX_DIMS);
    if (ferry__wrap_dim(dim, t->ndim + 1, &d) != FERRY_OK)
        return NULL;
    for (int i = 0, j = 0; i <= t->ndim; i++) {
        if (i == d) {
            sizes[i] = 1;
            strides[i] = d < t->ndim ? t->sizes[d] * t->strides[d] : 1;
        } else {
            sizes[i] = t->sizes[j];
            strides[i] = t->strides[j++];
        }
    }
    ferry_tensor *out = ferry__tensor_make(t->storage, t->offset, t->ndim + 1, sizes, strides,
                                           t->dtype);
    ferry__op_record rec = {.op = FERRY__OP_UNSQUEEZE, .n_inputs = 1, .inputs = &t};
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_squeeze_dim(ferry_tensor *t, int dim)
{
    int d;
    int64_t sizes[FERRY_MAX_DIMS], strides[FERRY_MAX_DIMS];
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "squeeze: tensor is NULL");
    if (ferry__wrap_dim(dim, t->ndim, &d) != FERRY_OK)
        return NULL;
    int nd = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == d && t->sizes[i] == 1)
            continue;
        sizes[nd] = t->sizes[i];
        strides[nd++] = t->strides[i];
    }
    ferry_tensor *out = ferry__tensor_make(t->storage, t->offset, nd, sizes, strides, t->dtype);
    ferry__op_record rec = {.op = FERRY__OP_SQUEEZE, .n_inputs = 1, .inputs = &t};
    return ferry__ops_record(out, &rec);
}

/* torch.cat skips 1-D empty tensors whatever the other shapes (legacy behaviour it keeps). */
static bool cat_skips(const ferry_tensor *t)
{
    return t->ndim == 1 && t->sizes[0] == 0;
}

/* Validates cat's inputs, returning the reference tensor (first non-skipped) or NULL. */
static ferry_tensor *cat_check(ferry_tensor *const *ts, size_t n, int dim, int *d_out,
                               ferry_dtype *dt_out)
{
    ferry_tensor *ref = NULL;
    if (n == 0 || ts == NULL)
        return ferry__fail_null(FERRY_EINVAL, "torch.cat(): expected a non-empty list of Tensors");
    for (size_t i = 0; i < n; i++) {
        if (ferry__check_dtype(ts[i], "cat") != FERRY_OK)
            return NULL;
        *dt_out = i == 0 ? ts[i]->dtype : ferry__promote(*dt_out, ts[i]->dtype);
        if (ref == NULL && !cat_skips(ts[i]))
            ref = ts[i];
    }
    if (ref == NULL)
        ref = ts[0];
    if (ferry__wrap_dim(dim, ref->ndim, d_out) != FERRY_OK)
        return NULL;
    if (ref->ndim == 0)
        return ferry__fail_null(FERRY_EINVAL, "zero-dimensional tensor (at position 0) cannot be concatenated");
    for (size_t i = 0; i < n; i++) {
        if (cat_skips(ts[i]) || ts[i] == ref)
            continue;
        if (ts[i]->ndim != ref->ndim)
            return ferry__fail_null(FERRY_EINVAL,
                                    "Tensors must have same number of dimensions: got %d and %d",
                                    ref->ndim, ts[i]->ndim);
        for (int k = 0; k < ref->ndim; k++)
            if (k != *d_out && ts[i]->sizes[k] != ref->sizes[k])
                return ferry__fail_null(FERRY_EINVAL,
                                        "Sizes of tensors must match except in dimension %d. Expected "
                                        "size %lld but got size %lld for tensor number %zu in the list.",
                                        *d_out, (long long)ref->sizes[k], (long long)ts[i]->sizes[k], i);
    }
    return ref;
}

static ferry_tensor *cat_raw(ferry_tensor *const *ts, size_t n, int dim, int *d_out)
{
    ferry_dtype dt = FERRY_FLOAT32;
    ferry_device dev;
    ferry_tensor *ref = cat_check(ts, n, dim, d_out, &dt);
    if (ref == NULL || ferry__check_devices(n, ts, &dev) != FERRY_OK)
        return NULL;
    int d = *d_out;
    int64_t sizes[FERRY_MAX_DIMS];
    memcpy(sizes, ref->sizes, sizeof sizes);
    sizes[d] = 0;
    for (size_t i = 0; i < n; i++)
        sizes[d] += cat_skips(ts[i]) && ts[i] != ref ? 0 : ts[i]->sizes[d];
    ferry_tensor *out = ferry_tensor_empty(ref->ndim, sizes, dt, dev);
    int64_t at = 0;
    for (size_t i = 0; out != NULL && i < n; i++) {
        if (cat_skips(ts[i]) && ts[i] != ref)
            continue;
        ferry_tensor *dst = ferry_tensor_narrow(out, d, at, ts[i]->sizes[d]);
        ferry_status rc = dst ? ferry_tensor_copy_(dst, ts[i]) : FERRY_ENOMEM;
        ferry_tensor_release(dst);
        if (rc != FERRY_OK) {
            ferry_tensor_release(out);
            return NULL;
        }
        at += ts[i]->sizes[d];
    }
    return out;
}

ferry_tensor *ferry_cat(ferry_tensor *const *tensors, size_t n, int dim)
{
    int d;
    ferry_tensor *out = cat_raw(tensors, n, dim, &d);
    ferry__op_record rec = {.op = FERRY__OP_CAT, .n_inputs = n, .inputs = tensors, .n_ints = 1,
                            .ints = {d}};
    return out ? ferry__ops_record(out, &rec) : NULL;
}

ferry_tensor *ferry_stack(ferry_tensor *const *tensors, size_t n, int dim)
{
    int d, cd;
    char sa[128], sb[128];
    if (n == 0 || tensors == NULL)
        return ferry__fail_null(FERRY_EINVAL, "stack expects a non-empty TensorList");
    for (size_t i = 0; i < n; i++) {
        if (ferry__check_dtype(tensors[i], "stack") != FERRY_OK)
            return NULL;
        if (!ferry__same_shape(tensors[i], tensors[0]))
            return ferry__fail_null(FERRY_EINVAL,
                                    "stack expects each tensor to be equal size, but got %s at entry "
                                    "0 and %s at entry %zu",
                                    ferry__shape_str(tensors[0]->ndim, tensors[0]->sizes, sa, sizeof sa),
                                    ferry__shape_str(tensors[i]->ndim, tensors[i]->sizes, sb, sizeof sb), i);
    }
    if (ferry__wrap_dim(dim, tensors[0]->ndim + 1, &d) != FERRY_OK)
        return NULL;
    ferry_tensor **views = ferry__calloc(n, sizeof *views);
    if (views == NULL)
        return ferry__fail_null(FERRY_ENOMEM, "stack: out of memory");
    ferry_tensor *out = NULL;
    size_t made = 0;
    for (; made < n; made++) {
        ferry_tensor *plain = ferry__alias(tensors[made]); /* out of the graph: stack records once */
        views[made] = plain ? ferry_unsqueeze(plain, d) : NULL;
        ferry_tensor_release(plain);
        if (views[made] == NULL)
            goto done;
    }
    out = cat_raw(views, n, d, &cd);
done:
    for (size_t i = 0; i < made; i++)
        ferry_tensor_release(views[i]);
    ferry__free(views);
    ferry__op_record rec = {.op = FERRY__OP_STACK, .n_inputs = n, .inputs = tensors, .n_ints = 1,
                            .ints = {d}};
    return out ? ferry__ops_record(out, &rec) : NULL;
}

ferry_status ferry__index_add_raw(ferry_tensor *out, int dim, ferry_tensor *index, ferry_tensor *src)
{
    int64_t outer = 1, inner = 1, n = out->sizes[dim], len = ferry_tensor_numel(index);
    ferry_tensor *ins[3] = {out, index, src};
    ferry_device dev;
    bool kern = ferry__use_kernels(3, ins);
    if (!kern && ferry__needs_staging(3, ins)) { /* add on host copies, write them back */
        ferry_tensor *h[3];
        if (ferry__stage_in(3, ins, h, &dev) != FERRY_OK)
            return ferry_last_status();
        ferry_status rc = ferry__index_add_raw(h[0], dim, h[1], h[2]);
        if (rc == FERRY_OK)
            rc = ferry__stage_back(out, h[0]);
        ferry__stage_release(3, h);
        return rc;
    }
    if (ferry__check_devices(3, ins, &dev) != FERRY_OK ||
        ferry__check_operand(out, "index_add_", kern) != FERRY_OK ||
        ferry__check_operand(index, "index_add_", kern) != FERRY_OK ||
        ferry__check_operand(src, "index_add_", kern) != FERRY_OK)
        return ferry_last_status();
    for (int i = 0; i < out->ndim; i++) {
        if (i < dim)
            outer *= out->sizes[i];
        else if (i > dim)
            inner *= out->sizes[i];
    }
    ferry_tensor *cs = ferry__contig_dtype(src, out->dtype);
    ferry_tensor *ci = cs ? ferry__contig_dtype(index, FERRY_INT64) : NULL;
    if (ci == NULL) {
        ferry_tensor_release(cs);
        return ferry_last_status();
    }
#ifdef FERRY_WITH_CUDA
    if (kern) {
        ferry_status rc = ferry__k_index_add(dev.index, out->dtype, ferry__kdata(out),
                                             ferry__kdata(ci), ferry__kdata(cs), outer, n, len,
                                             inner);
        ferry_tensor_release(cs);
        ferry_tensor_release(ci);
        return rc;
    }
#endif
    const int64_t *idx = ferry_tensor_data(ci);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t q = 0; q < len; q++) {
            int64_t dst = (o * n + idx[q]) * inner, s = (o * len + q) * inner;
            if (out->dtype == FERRY_FLOAT32) {
                float *y = (float *)ferry_tensor_data(out) + dst;
                const float *x = (const float *)ferry_tensor_data(cs) + s;
                for (int64_t j = 0; j < inner; j++)
                    y[j] += x[j];
            } else if (out->dtype == FERRY_FLOAT64) {
                double *y = (double *)ferry_tensor_data(out) + dst;
                const double *x = (const double *)ferry_tensor_data(cs) + s;
                for (int64_t j = 0; j < inner; j++)
                    y[j] += x[j];
            }
        }
    ferry_tensor_release(cs);
    ferry_tensor_release(ci);
    return FERRY_OK;
}

/* index_select without recording; also the forward of embedding. */
static ferry_tensor *index_select_raw(ferry_tensor *t, int d, ferry_tensor *index)
{
    int64_t sizes[FERRY_MAX_DIMS], outer = 1, inner = 1, len = ferry_tensor_numel(index);
    int64_t n = t->ndim > 0 ? t->sizes[d] : 1;
    ferry_tensor *ins[2] = {t, index};
    ferry_device dev;
    bool kern = ferry__use_kernels(2, ins);
    if (!kern)
        FERRY__STAGE(2, ins, h, index_select_raw(h[0], d, h[1]));
    if (ferry__check_devices(2, ins, &dev) != FERRY_OK ||
        ferry__check_operand(t, "index_select", kern) != FERRY_OK ||
        ferry__check_operand(index, "index_select", kern) != FERRY_OK)
        return NULL;
    memcpy(sizes, t->sizes, sizeof sizes);
    if (t->ndim > 0)
        sizes[d] = len;
    for (int i = 0; i < t->ndim; i++) {
        if (i < d)
            outer *= t->sizes[i];
        else if (i > d)
            inner *= t->sizes[i];
    }
    ferry_tensor *x = ferry_tensor_contiguous(t);
    ferry_tensor *ci = x ? ferry_tensor_contiguous(index) : NULL;
    ferry_tensor *out = ci ? ferry_tensor_empty(t->ndim, sizes, t->dtype, t->device) : NULL;
#ifdef FERRY_WITH_CUDA
    if (out != NULL && kern) {
        int32_t bad = 0;
        ferry_tensor *flag = ferry_tensor_empty(0, NULL, FERRY_FLOAT32, t->device); /* 4 bytes */
        ferry_status rc = flag ? ferry__k_fill(t->device.index, ferry__kdata(flag), FERRY_FLOAT32,
                                               1, 0.0)
                               : ferry_last_status();
        if (rc == FERRY_OK)
            rc = ferry__k_index_select(t->device.index, (size_t)inner * ferry_dtype_size(t->dtype),
                                       ferry__kdata(x), ferry__kdata(ci), ferry__kdata(out),
                                       outer, n, len, ferry__kdata(flag));
        if (rc == FERRY_OK)
            rc = ferry__device_copy_sync(&bad, FERRY_DEVICE_CPU, ferry__kdata(flag), t->device,
                                         sizeof bad);
        if (rc == FERRY_OK && bad != 0)
            ferry__fail(FERRY_EINVAL, "index out of range in self");
        if (rc != FERRY_OK || bad != 0) {
            ferry_tensor_release(out);
            out = NULL;
        }
        ferry_tensor_release(flag);
        ferry_tensor_release(x);
        ferry_tensor_release(ci);
        return out;
    }
#endif
    if (out != NULL) {
        const int64_t *idx = ferry_tensor_data(ci);
        size_t row = (size_t)inner * ferry_dtype_size(t->dtype);
        for (int64_t k = 0; k < len && out != NULL; k++) {
            if (idx[k] < -n || idx[k] >= n) {
                ferry_tensor_release(out);
                out = ferry__fail_null(FERRY_EINVAL, "index out of range in self");
            }
        }
        for (int64_t o = 0; out != NULL && o < outer; o++)
            for (int64_t k = 0; k < len; k++) {
                int64_t at = idx[k] < 0 ? idx[k] + n : idx[k];
                memcpy((char *)ferry_tensor_data(out) + (size_t)(o * len + k) * row,
                       (const char *)ferry_tensor_data(x) + (size_t)(o * n + at) * row, row);
            }
    }
    ferry_tensor_release(x);
    ferry_tensor_release(ci);
    return out;
}

ferry_tensor *ferry_index_select(ferry_tensor *t, int dim, ferry_tensor *index)
{
    int d;
    if (ferry__check_dtype(t, "index_select") != FERRY_OK || index == NULL)
        return index ? NULL : ferry__fail_null(FERRY_EINVAL, "index_select: index is NULL");
    if (index->dtype != FERRY_INT64 || index->ndim > 1)
        return ferry__fail_null(FERRY_EINVAL, "index_select(): Index is supposed to be a vector of "
                                              "int64 (got %dD %s)",
                                index->ndim, ferry_dtype_name(index->dtype));
    if (ferry__wrap_dim(dim, t->ndim, &d) != FERRY_OK)
        return NULL;
    ferry__op_record rec = {.op = FERRY__OP_INDEX_SELECT, .n_inputs = 1, .inputs = &t, .n_saved = 1,
                            .saved = {index}, .n_ints = 1, .ints = {d}};
    return ferry__ops_record(index_select_raw(t, d, index), &rec);
}

ferry_tensor *ferry_embedding(ferry_tensor *weight, ferry_tensor *indices)
{
    int64_t sizes[FERRY_MAX_DIMS];
    if (ferry__check_dtype(weight, "embedding") != FERRY_OK || indices == NULL)
        return indices ? NULL : ferry__fail_null(FERRY_EINVAL, "embedding: indices is NULL");
    if (weight->ndim != 2)
        return ferry__fail_null(FERRY_EINVAL, "'weight' must be 2-D");
    if (indices->dtype != FERRY_INT64)
        return ferry__fail_null(FERRY_EINVAL, "Expected tensor for argument #1 'indices' to have "
                                              "scalar type Long; but got %s instead",
                                ferry_dtype_name(indices->dtype));
    if (indices->ndim + 1 > FERRY_MAX_DIMS)
        return ferry__fail_null(FERRY_EINVAL, "embedding: too many dims");
    int64_t len = ferry_tensor_numel(indices);
    ferry_tensor *flat = ferry_tensor_reshape(indices, 1, &len);
    ferry_tensor *rows = flat ? index_select_raw(weight, 0, flat) : NULL;
    ferry_tensor_release(flat);
    if (rows == NULL)
        return NULL;
    memcpy(sizes, indices->sizes, sizeof(int64_t) * (size_t)indices->ndim);
    sizes[indices->ndim] = weight->sizes[1];
    ferry_tensor *out = ferry_tensor_reshape(rows, indices->ndim + 1, sizes);
    ferry_tensor_release(rows);
    ferry__op_record rec = {.op = FERRY__OP_EMBEDDING, .n_inputs = 1, .inputs = &weight,
                            .n_saved = 1, .saved = {indices}};
    return ferry__ops_record(out, &rec);
}

ferry_tensor *ferry_clone(ferry_tensor *t)
{
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "clone: tensor is NULL");
    ferry__op_record rec = {.op = FERRY__OP_CLONE, .n_inputs = 1, .inputs = &t};
    return ferry__ops_record(ferry_tensor_clone_data(t), &rec);
}

ferry_tensor *ferry_detach(ferry_tensor *t)
{
    if (t == NULL)
        return ferry__fail_null(FERRY_EINVAL, "detach: tensor is NULL");
    return ferry__alias(t);
}
