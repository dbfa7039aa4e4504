/* torch.matmul and F.linear. Every case (dot, matrix-vector, matrix-matrix, batched with
   broadcast batch dims) becomes a loop of [m, k] x [k, n] products over the broadcast batch.
   Float products go to OpenBLAS; an operand whose last two strides make it a row-major matrix
   or the transpose of one is passed as it lies (CblasTrans plus its leading dimension), so
   transposed weights and views are never copied. int64 products use a plain loop. */
#include "tensor/ops_internal.h"

#include <cblas.h>
#include <string.h>

#include "core/error.h"

/* One operand seen as a batch of [rows, cols] matrices. */
typedef struct {
    int64_t rows, cols, rs, cs; /* matrix extents and strides */
    bool trans;                 /* passed to BLAS as the transpose of a row-major matrix */
    int64_t ld;
} mat_view;

/* Whether BLAS can read the matrix in place, and how. Strides of size-1 dims carry no
   information, so those dims accept either layout. */
static bool blas_layout(mat_view *m)
{
    if (m->rows <= 1 && (m->cols <= 1 || m->cs == 1)) {
        m->trans = false;
        m->ld = m->cols > 1 ? m->cols : 1;
        return true;
    }
    if (m->rows <= 1) { /* a row with a gap between elements: the transpose of a column */
        m->trans = true;
        m->ld = m->cs;
        return m->cs >= 1;
    }
    if (m->cols <= 1 || m->cs == 1) {
        m->trans = false;
        m->ld = m->rs;
        return m->rs >= (m->cols > 1 ? m->cols : 1);
    }
    if (m->rs == 1) {
        m->trans = true;
        m->ld = m->cs;
        return m->cs >= m->rows;
    }
    return false;
}

static void gemm_i64(int64_t m, int64_t n, int64_t k, const int64_t *a, const mat_view *va,
                     const int64_t *b, const mat_view *vb, int64_t *c)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            uint64_t s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (uint64_t)a[i * va->rs + p * va->cs] * (uint64_t)b[p * vb->rs + j * vb->cs];
            c[i * n + j] = (int64_t)s;
        }
}

static void gemm_one(ferry_dtype dt, int64_t m, int64_t n, int64_t k, const char *a,
                     const mat_view *va, const char *b, const mat_view *vb, char *c)
{
    enum CBLAS_TRANSPOSE ta = va->trans ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = vb->trans ? CblasTrans : CblasNoTrans;
    if (dt == FERRY_FLOAT32)
        cblas_sgemm(CblasRowMajor, ta, tb, (blasint)m, (blasint)n, (blasint)k, 1.0f,
                    (const float *)a, (blasint)va->ld, (const float *)b, (blasint)vb->ld, 0.0f,
                    (float *)c, (blasint)n);
    else if (dt == FERRY_FLOAT64)
        cblas_dgemm(CblasRowMajor, ta, tb, (blasint)m, (blasint)n, (blasint)k, 1.0,
                    (const double *)a, (blasint)va->ld, (const double *)b, (blasint)vb->ld, 0.0,
                    (double *)c, (blasint)n);
    else
        gemm_i64(m, n, k, (const int64_t *)a, va, (const int64_t *)b, vb, (int64_t *)c);
}

static ferry_status check_matmul_args(ferry_tensor *a, ferry_tensor *b, bool kernels)
{
    char sa[128], sb[128];
    if (ferry__check_operand(a, "matmul", kernels) != FERRY_OK ||
        ferry__check_operand(b, "matmul", kernels) != FERRY_OK)
        return ferry_last_status();
    if (a->ndim == 0 || b->ndim == 0)
        return ferry__fail(FERRY_EINVAL,
                           "both arguments to matmul need to be at least 1D, but they are %dD and %dD",
                           a->ndim, b->ndim);
    if (a->dtype != b->dtype)
        return ferry__fail(FERRY_EINVAL, "expected scalar type %s but found %s",
                           ferry__torch_type_name(a->dtype), ferry__torch_type_name(b->dtype));
    int64_t ka = a->sizes[a->ndim - 1], kb = b->sizes[b->ndim > 1 ? b->ndim - 2 : 0];
    if (ka == kb)
        return FERRY_OK;
    if (a->ndim == 1 && b->ndim == 1)
        return ferry__fail(FERRY_EINVAL,
                           "inconsistent tensor size, expected tensor [%lld] and src [%lld] to have "
                           "the same number of elements, but got %lld and %lld elements respectively",
                           (long long)ka, (long long)kb, (long long)ka, (long long)kb);
    int64_t ma = a->ndim > 1 ? a->sizes[a->ndim - 2] : 1, nb = b->ndim > 1 ? b->sizes[b->ndim - 1] : 1;
    if (a->ndim <= 2 && b->ndim <= 2)
        return ferry__fail(FERRY_EINVAL, "mat1 and mat2 shapes cannot be multiplied (%lldx%lld and %lldx%lld)",
                           (long long)ma, (long long)ka, (long long)kb, (long long)nb);
    return ferry__fail(FERRY_EINVAL, "matmul: shapes %s and %s cannot be multiplied",
                       ferry__shape_str(a->ndim, a->sizes, sa, sizeof sa),
                       ferry__shape_str(b->ndim, b->sizes, sb, sizeof sb));
}

/* The matrix part of operand t: a 1-D t is a row ([1, k]) on the left, a column on the right. */
static mat_view matrix_of(const ferry_tensor *t, bool left)
{
    mat_view v;
    if (t->ndim == 1) {
        v.rows = left ? 1 : t->sizes[0];
        v.cols = left ? t->sizes[0] : 1;
        v.rs = left ? t->sizes[0] * t->strides[0] : t->strides[0];
        v.cs = left ? t->strides[0] : 1;
    } else {
        v.rows = t->sizes[t->ndim - 2];
        v.cols = t->sizes[t->ndim - 1];
        v.rs = t->strides[t->ndim - 2];
        v.cs = t->strides[t->ndim - 1];
    }
    return v;
}

/* Batch geometry: broadcast batch shape, and each operand's batch strides (0 if broadcast). */
typedef struct {
    int nd;
    int64_t sizes[FERRY_MAX_DIMS];
    int64_t sa[FERRY_MAX_DIMS], sb[FERRY_MAX_DIMS];
} batch_geom;

static ferry_status batch_of(const ferry_tensor *a, const ferry_tensor *b, batch_geom *g)
{
    int nda = a->ndim > 2 ? a->ndim - 2 : 0, ndb = b->ndim > 2 ? b->ndim - 2 : 0;
    if (ferry__broadcast_shape(nda, a->sizes, ndb, b->sizes, &g->nd, g->sizes) != FERRY_OK)
        return FERRY_EINVAL;
    for (int i = 0; i < g->nd; i++) {
        int ia = i - (g->nd - nda), ib = i - (g->nd - ndb);
        g->sa[i] = ia < 0 || a->sizes[ia] == 1 ? 0 : a->strides[ia];
        g->sb[i] = ib < 0 || b->sizes[ib] == 1 ? 0 : b->strides[ib];
    }
    return FERRY_OK;
}

/* Runs the batch loop; a and b already have BLAS-readable matrices. */
static void run_batches(ferry_tensor *a, mat_view *va, ferry_tensor *b, mat_view *vb,
                        const batch_geom *g, ferry_tensor *out)
{
    size_t es = ferry_dtype_size(a->dtype);
    int64_t m = va->rows, n = vb->cols, k = va->cols, idx[FERRY_MAX_DIMS] = {0};
    int64_t nbatch = ferry__shape_numel(g->nd, g->sizes);
    char *pa = ferry_tensor_data(a), *pb = ferry_tensor_data(b), *pc = ferry_tensor_data(out);
    for (int64_t bi = 0; bi < nbatch; bi++) {
        int64_t oa = 0, ob = 0;
        for (int d = 0; d < g->nd; d++) {
            oa += idx[d] * g->sa[d];
            ob += idx[d] * g->sb[d];
        }
        gemm_one(a->dtype, m, n, k, pa + (size_t)oa * es, va, pb + (size_t)ob * es, vb,
                 pc + (size_t)(bi * m * n) * es);
        for (int d = g->nd - 1; d >= 0 && ++idx[d] == g->sizes[d]; d--)
            idx[d] = 0;
    }
}

/* Contiguous copy of t when BLAS cannot read its matrices in place (or for int64, never). */
static ferry_tensor *readable(ferry_tensor *t, mat_view *v, bool left)
{
    if (t->dtype == FERRY_INT64 || blas_layout(v))
        return ferry_tensor_retain(t);
    ferry_tensor *c = ferry_tensor_contiguous(t);
    if (c != NULL) {
        *v = matrix_of(c, left);
        blas_layout(v);
    }
    return c;
}

#ifdef FERRY_WITH_CUDA
/* t's operand matrices as a contiguous [batch..., rows, cols] tensor broadcast to the batch
   shape g (a 1-D t is a row on the left, a column on the right). */
static ferry_tensor *gemm_operand(ferry_tensor *t, bool left, const batch_geom *g)
{
    mat_view v = matrix_of(t, left);
    int64_t sizes[FERRY_MAX_DIMS + 2];
    memcpy(sizes, g->sizes, sizeof(int64_t) * (size_t)g->nd);
    sizes[g->nd] = v.rows;
    sizes[g->nd + 1] = v.cols;
    int64_t own[FERRY_MAX_DIMS];
    int nd = t->ndim > 2 ? t->ndim - 2 : 0;
    memcpy(own, t->sizes, sizeof(int64_t) * (size_t)nd);
    own[nd] = v.rows;
    own[nd + 1] = v.cols;
    ferry_tensor *m = ferry_tensor_reshape(t, nd + 2, own);
    ferry_tensor *e = m ? ferry__expand(m, g->nd + 2, sizes) : NULL;
    ferry_tensor *c = e ? ferry_tensor_contiguous(e) : NULL;
    ferry_tensor_release(m);
    ferry_tensor_release(e);
    return c;
}

/* The product on a real GPU through cuBLAS: both operands as contiguous batches. */
static ferry_tensor *matmul_kernel(ferry_tensor *a, ferry_tensor *b, const batch_geom *g,
                                   int nd, const int64_t *sizes)
{
    mat_view va = matrix_of(a, true), vb = matrix_of(b, false);
    ferry_tensor *ca = gemm_operand(a, true, g);
    ferry_tensor *cb = ca ? gemm_operand(b, false, g) : NULL;
    ferry_tensor *out = cb ? ferry_tensor_empty(nd, sizes, a->dtype, a->device) : NULL;
    if (out != NULL &&
        ferry__kern_gemm(a->device.index, a->dtype, va.rows, vb.cols, va.cols, ferry__kdata(ca),
                         ferry__kdata(cb), ferry__kdata(out),
                         ferry__shape_numel(g->nd, g->sizes)) != FERRY_OK) {
        ferry_tensor_release(out);
        out = NULL;
    }
    ferry_tensor_release(ca);
    ferry_tensor_release(cb);
    return out;
}
#endif

ferry_tensor *ferry__matmul_raw(ferry_tensor *a, ferry_tensor *b)
{
    batch_geom g;
    int64_t sizes[FERRY_MAX_DIMS + 2];
    ferry_tensor *ins[2] = {a, b};
    ferry_device dev;
    if (a != NULL && b != NULL && ferry__check_devices(2, ins, &dev) != FERRY_OK)
        return NULL;
    /* float products on a real GPU run on cuBLAS; int64 ones take the staged path */
    bool k = a != NULL && b != NULL && ferry__use_kernels(2, ins) && a->dtype == b->dtype &&
             ferry__is_floating(a->dtype);
    if (!k && a != NULL && b != NULL && a->ndim > 0 && b->ndim > 0)
        FERRY__STAGE(2, ins, h, ferry__matmul_raw(h[0], h[1]));
    if (check_matmul_args(a, b, k) != FERRY_OK || batch_of(a, b, &g) != FERRY_OK)
        return NULL;
    mat_view va = matrix_of(a, true), vb = matrix_of(b, false);
    int nd = g.nd;
    memcpy(sizes, g.sizes, sizeof(int64_t) * (size_t)g.nd);
    if (a->ndim > 1)
        sizes[nd++] = va.rows;
    if (b->ndim > 1)
        sizes[nd++] = vb.cols;
    if (nd > FERRY_MAX_DIMS)
        return ferry__fail_null(FERRY_EINVAL, "matmul: result has more than %d dims", FERRY_MAX_DIMS);
    if (va.cols == 0 || ferry__shape_numel(nd, sizes) == 0) /* empty sum: zeros, as torch */
        return ferry__zeros_on(nd, sizes, a->dtype, a->device);
#ifdef FERRY_WITH_CUDA
    if (k)
        return matmul_kernel(a, b, &g, nd, sizes);
#endif
    ferry_tensor *ca = readable(a, &va, true);
    ferry_tensor *cb = ca ? readable(b, &vb, false) : NULL;
    ferry_tensor *out = cb ? ferry_tensor_empty(nd, sizes, a->dtype, a->device) : NULL;
    if (out != NULL) {
        if (ca != a || cb != b) /* copies are contiguous: their batch strides changed */
            batch_of(ca, cb, &g);
        run_batches(ca, &va, cb, &vb, &g, out);
    }
    ferry_tensor_release(ca);
    ferry_tensor_release(cb);
    return out;
}

ferry_tensor *ferry_matmul(ferry_tensor *a, ferry_tensor *b)
{
    ferry_tensor *inputs[2] = {a, b};
    ferry__op_record rec = {.op = FERRY__OP_MATMUL, .n_inputs = 2, .inputs = inputs, .n_saved = 2,
                            .saved = {a, b}};
    return ferry__ops_record(ferry__matmul_raw(a, b), &rec);
}

ferry_tensor *ferry_linear(ferry_tensor *x, ferry_tensor *weight, ferry_tensor *bias)
{
    if (weight == NULL || x == NULL)
        return ferry__fail_null(FERRY_EINVAL, "linear: input and weight must not be NULL");
    if (weight->ndim != 2 && weight->ndim != 1)
        return ferry__fail_null(FERRY_EINVAL, "linear: weight must be 1-D or 2-D, got %dD",
                                weight->ndim);
    /* The transposed weight is a view: BLAS reads it with CblasTrans, no copy. */
    ferry_tensor *wt = weight->ndim == 2 ? ferry_transpose(weight, 0, 1) : ferry_tensor_retain(weight);
    ferry_tensor *y = wt ? ferry_matmul(x, wt) : NULL;
    ferry_tensor_release(wt);
    if (y == NULL || bias == NULL)
        return y;
    ferry_tensor *out = ferry_add(y, bias);
    ferry_tensor_release(y);
    return out;
}
