/* A distributed RNN trained with distributed autograd and a DistributedOptimizer, as in the
   RNN part of torch's RPC tutorial. The model has three parts on three processes:
   - an EmbeddingTable (nn.Embedding(32, 16)) built on "worker1" by ferry_remote_object;
   - a one-layer LSTM (16 -> 16) that stays with the master, run step by step over the sequence
     with ferry_lstm_cell (torch's gate order i, f, g, o and its two biases b_ih, b_hh, so the
     reference can use torch.nn.LSTM with the same four tensors);
   - a Decoder (nn.Linear(16, 32)) built on "worker2".
   The master's forward pass (RNNModel.forward) sends the token ids to the EmbeddingTable, runs
   the LSTM on what comes back, sends the LSTM's outputs to the Decoder and computes the
   cross-entropy of the logits it gets against the next tokens. Every step runs inside its own
   distributed autograd context: the backward pass goes back through both workers, and a
   DistributedOptimizer (SGD, fixed lr) updates every part where it lives, with the gradients
   each worker's part of the context holds. The parameters reach the optimizer as RRefs to the
   owners' very tensors: the workers' through each object's parameter_rrefs method, the LSTM's
   as local OwnerRRefs.

   The data is synthetic: each sequence starts at a random token and follows the fixed rule
   next = (3 * token + 1) mod 32; the targets are the tokens one position later, so the model
   can learn them and the loss falls. Every step draws a fresh batch from a seeded generator;
   each LSTM pass starts from a zero state (torch's hx=None), since batches are unrelated.
   There is no dropout (the tutorial's would need torch's random stream to be reproduced).

   Run `build/examples/model_parallel_rnn`: without RANK in the environment it starts its three
   ranks itself on 127.0.0.1 (a free port, a fresh FERRY_AUTH_TOKEN);
   `build/bin/ferryrun -n 3 build/examples/model_parallel_rnn` works too. Options:
     --steps N          train N steps (default 50)
     --weights-out FILE write the initial weights and every step's data to FILE (safetensors)
                        before training, for reference.py --weights FILE
     --bench N          3 untimed warm-up steps, then N timed ones; prints step_ms last
   The master prints `step <i> loss <loss>` every step and a summary; the exit status is
   non-zero unless the last loss is below the first. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/ferry.h"
#include "examples/launch.h"

#define VOCAB 32
#define EMB 16
#define HIDDEN 16
#define SEQ 8
#define BATCH 4
#define STEPS 50
#define LR 1.0
#define WARMUP 3
#define SEED_EMB 11
#define SEED_RNN 12
#define SEED_DEC 13
#define SEED_DATA 14
#define WORLD 3
#define N_PARAMS 7         /* emb.weight, the LSTM's four, dec.weight, dec.bias */
#define DEADLINE_S 300.0   /* the whole run, ASan builds included; stragglers are killed */

typedef struct {
    int steps;               /* steps to train (bench: warm-up included) */
    int bench;               /* timed steps, 0 when not benchmarking */
    const char *weights_out; /* NULL: write nothing */
} options;

static int fail(const char *what)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, ferry_strerror(ferry_last_status()),
            ferry_last_error());
    return 1;
}

/* ---- the parts that live on the workers ---- */

/* A list of RRefs, each holding one of the object's own parameter tensors (torch's
   _parameter_rrefs: [RRef(p) for p in module.parameters()]); the optimizer on this worker will
   update these very tensors. */
static ferry_status parameter_rrefs(ferry_tensor *const *params, size_t n, ferry_value **result)
{
    ferry_value *items[N_PARAMS] = {NULL};
    ferry_status rc = n <= N_PARAMS ? FERRY_OK
                                    : ferry_set_error(FERRY_EINVAL, "too many parameters");
    for (size_t i = 0; i < n && rc == FERRY_OK; i++) {
        ferry_value *v = ferry_tensor_value(params[i]);
        ferry_rref *r = v ? ferry_rref_new(v) : NULL;
        items[i] = r ? ferry_rref_value(r) : NULL;
        ferry_rref_release(r);
        ferry_value_release(v);
        rc = items[i] ? FERRY_OK : ferry_last_status();
    }
    *result = rc == FERRY_OK ? ferry_list_from(items, n) : NULL;
    for (size_t i = 0; i < N_PARAMS; i++)
        ferry_value_release(items[i]);
    return rc == FERRY_OK && !*result ? ferry_last_status() : rc;
}

static ferry_status tensor_result(ferry_tensor *t, ferry_value **result)
{
    if (!t)
        return ferry_last_status();
    *result = ferry_tensor_value(t);
    ferry_tensor_release(t);
    return *result ? FERRY_OK : ferry_last_status();
}

typedef struct {
    ferry_tensor *weight; /* [VOCAB, EMB] */
} embedding_table;

/* EmbeddingTable(ntoken, ninp, seed): nn.Embedding's weight from its own seeded generator. */
static ferry_status embedding_table_new(const ferry_value *args, const ferry_value *kwargs,
                                        void **obj, void *user)
{
    int64_t ntoken = ferry_value_as_int(ferry_list_get(args, 0));
    int64_t ninp = ferry_value_as_int(ferry_list_get(args, 1));
    int64_t seed = ferry_value_as_int(ferry_list_get(args, 2));
    ferry_generator *gen = ferry_generator_new((uint64_t)seed);
    embedding_table *e = calloc(1, sizeof *e);
    if (!gen || !e) {
        ferry_generator_free(gen);
        free(e);
        return ferry_set_error(FERRY_ENOMEM, "EmbeddingTable: out of memory");
    }
    e->weight = ferry_embedding_init(ntoken, ninp, FERRY_FLOAT64, gen);
    ferry_generator_free(gen);
    if (!e->weight) {
        free(e);
        return ferry_last_status();
    }
    *obj = e;
    return FERRY_OK;
}

static void embedding_table_free(void *obj, void *user)
{
    embedding_table *e = obj;
    ferry_tensor_release(e->weight);
    free(e);
}

/* forward(input): the rows of the table for int64 token ids of any shape. Runs inside the
   master's context (the call carries its id), so the lookup is recorded there and the
   backward pass brings the table's gradient back here. */
static ferry_status embedding_table_forward(void *obj, const ferry_value *args,
                                            const ferry_value *kwargs, ferry_value **result,
                                            void *user)
{
    embedding_table *e = obj;
    ferry_tensor *input = ferry_value_as_tensor(ferry_list_get(args, 0));
    if (!input)
        return ferry_set_error(FERRY_ETYPE, "EmbeddingTable.forward(input) needs a tensor");
    return tensor_result(ferry_embedding(e->weight, input), result);
}

static ferry_status embedding_table_params(void *obj, const ferry_value *args,
                                           const ferry_value *kwargs, ferry_value **result,
                                           void *user)
{
    embedding_table *e = obj;
    return parameter_rrefs(&e->weight, 1, result);
}

typedef struct {
    ferry_tensor *weight, *bias; /* [VOCAB, HIDDEN], [VOCAB] */
} decoder;

/* Decoder(ntoken, nhid, seed): nn.Linear(nhid, ntoken) from its own seeded generator. */
static ferry_status decoder_new(const ferry_value *args, const ferry_value *kwargs, void **obj,
                                void *user)
{
    int64_t ntoken = ferry_value_as_int(ferry_list_get(args, 0));
    int64_t nhid = ferry_value_as_int(ferry_list_get(args, 1));
    int64_t seed = ferry_value_as_int(ferry_list_get(args, 2));
    ferry_generator *gen = ferry_generator_new((uint64_t)seed);
    decoder *d = calloc(1, sizeof *d);
    if (!gen || !d) {
        ferry_generator_free(gen);
        free(d);
        return ferry_set_error(FERRY_ENOMEM, "Decoder: out of memory");
    }
    ferry_status rc = ferry_linear_init(nhid, ntoken, true, FERRY_FLOAT64, gen, &d->weight,
                                        &d->bias);
    ferry_generator_free(gen);
    if (rc != FERRY_OK) {
        free(d);
        return rc;
    }
    *obj = d;
    return FERRY_OK;
}

static void decoder_free(void *obj, void *user)
{
    decoder *d = obj;
    ferry_tensor_release(d->weight);
    ferry_tensor_release(d->bias);
    free(d);
}

/* forward(output): the logits of the LSTM's outputs, [..., HIDDEN] -> [..., VOCAB]. */
static ferry_status decoder_forward(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                    ferry_value **result, void *user)
{
    decoder *d = obj;
    ferry_tensor *output = ferry_value_as_tensor(ferry_list_get(args, 0));
    if (!output)
        return ferry_set_error(FERRY_ETYPE, "Decoder.forward(output) needs a tensor");
    return tensor_result(ferry_linear(output, d->weight, d->bias), result);
}

static ferry_status decoder_params(void *obj, const ferry_value *args, const ferry_value *kwargs,
                                   ferry_value **result, void *user)
{
    decoder *d = obj;
    ferry_tensor *params[2] = {d->weight, d->bias};
    return parameter_rrefs(params, 2, result);
}

static const ferry_method_def embedding_table_methods[] = {
    {.name = "forward", .fn = embedding_table_forward},
    {.name = "parameter_rrefs", .fn = embedding_table_params},
};
static const ferry_method_def decoder_methods[] = {
    {.name = "forward", .fn = decoder_forward},
    {.name = "parameter_rrefs", .fn = decoder_params},
};

/* ---- the master's model ---- */

typedef struct {
    ferry_rref *emb, *dec;              /* the remote parts */
    ferry_tensor *w_ih, *w_hh, *b_ih, *b_hh; /* the LSTM, here */
} rnn_model;

static const char *const param_names[N_PARAMS] = {
    "emb.weight",       "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
    "rnn.bias_hh_l0",   "dec.weight",       "dec.bias",
};

/* RNNModel(): the EmbeddingTable and the Decoder built on their workers, the LSTM here. */
static int model_new(rnn_model *m)
{
    ferry_generator *gen = ferry_generator_new(SEED_RNN);
    if (!gen || ferry_lstm_cell_init(EMB, HIDDEN, true, FERRY_FLOAT64, gen, &m->w_ih, &m->w_hh,
                                     &m->b_ih, &m->b_hh) != FERRY_OK) {
        ferry_generator_free(gen);
        return fail("making the LSTM");
    }
    ferry_generator_free(gen);
    ferry_value *a = ferry_args(3, ferry_int(VOCAB), ferry_int(EMB), ferry_int(SEED_EMB));
    m->emb = a ? ferry_remote_object("worker1", "EmbeddingTable", a, NULL, FERRY_TIMEOUT_DEFAULT)
               : NULL;
    ferry_value_release(a);
    a = ferry_args(3, ferry_int(VOCAB), ferry_int(HIDDEN), ferry_int(SEED_DEC));
    m->dec = a ? ferry_remote_object("worker2", "Decoder", a, NULL, FERRY_TIMEOUT_DEFAULT) : NULL;
    ferry_value_release(a);
    return m->emb && m->dec ? 0 : fail("remote_object");
}

static void model_free(rnn_model *m)
{
    ferry_rref_release(m->emb);
    ferry_rref_release(m->dec);
    ferry_tensor *t[4] = {m->w_ih, m->w_hh, m->b_ih, m->b_hh};
    for (int i = 0; i < 4; i++)
        ferry_tensor_release(t[i]);
}

/* Appends the RRefs a part's parameter_rrefs method returns to out[*n]. */
static int remote_params(ferry_rref *part, ferry_rref **out, size_t *n)
{
    ferry_value *list = ferry_rref_call_sync(part, "parameter_rrefs", NULL, NULL,
                                             FERRY_TIMEOUT_DEFAULT);
    if (!list)
        return fail("parameter_rrefs");
    for (size_t i = 0; i < ferry_list_len(list) && *n < N_PARAMS; i++)
        out[(*n)++] = ferry_rref_retain(ferry_value_as_rref(ferry_list_get(list, i)));
    ferry_value_release(list);
    return 0;
}

/* RNNModel.parameter_rrefs(): the table's, the LSTM's (local OwnerRRefs of its own tensors)
   and the decoder's, in param_names order. */
static int model_param_rrefs(rnn_model *m, ferry_rref **out)
{
    size_t n = 0;
    if (remote_params(m->emb, out, &n) != 0)
        return 1;
    ferry_tensor *lstm[4] = {m->w_ih, m->w_hh, m->b_ih, m->b_hh};
    for (int i = 0; i < 4; i++) {
        ferry_value *v = ferry_tensor_value(lstm[i]);
        out[n] = v ? ferry_rref_new(v) : NULL;
        ferry_value_release(v);
        if (!out[n++])
            return fail("rref_new");
    }
    if (remote_params(m->dec, out, &n) != 0)
        return 1;
    for (size_t i = 0; i < N_PARAMS; i++)
        if (i >= n || !out[i]) {
            fprintf(stderr, "parameter_rrefs: expected %d RRefs, got %zu\n", N_PARAMS, n);
            return 1;
        }
    return 0;
}

/* The LSTM over the sequence: emb [SEQ, BATCH, EMB] -> outputs [SEQ, BATCH, HIDDEN], from a
   zero state. */
static ferry_tensor *lstm_forward(rnn_model *m, ferry_tensor *emb)
{
    ferry_tensor *hs[SEQ] = {NULL}, *h = NULL, *c = NULL;
    int t = 0;
    for (; t < SEQ; t++) {
        ferry_tensor *row = ferry_narrow(emb, 0, t, 1);
        ferry_tensor *x = row ? ferry_squeeze_dim(row, 0) : NULL;
        ferry_tensor *h_new = NULL, *c_new = NULL;
        ferry_status rc = x ? ferry_lstm_cell(x, h, c, m->w_ih, m->w_hh, m->b_ih, m->b_hh,
                                              &h_new, &c_new)
                            : ferry_last_status();
        ferry_tensor_release(row);
        ferry_tensor_release(x);
        if (rc != FERRY_OK)
            break;
        ferry_tensor_release(c);
        c = c_new;
        hs[t] = h = h_new; /* hs holds the reference */
    }
    ferry_tensor_release(c);
    ferry_tensor *out = t == SEQ ? ferry_stack(hs, SEQ, 0) : NULL;
    for (int k = 0; k < SEQ; k++)
        ferry_tensor_release(hs[k]);
    return out;
}

/* RNNModel.forward(input) and the loss: the embedding on worker1, the LSTM here, the decoder
   on worker2, then cross-entropy over every position. Runs inside the caller's context. */
static ferry_tensor *model_loss(rnn_model *m, ferry_tensor *x, ferry_tensor *y)
{
    ferry_value *args = ferry_args(1, ferry_tensor_value(x));
    ferry_value *emb = args ? ferry_rref_call_sync(m->emb, "forward", args, NULL,
                                                   FERRY_TIMEOUT_DEFAULT)
                            : NULL;
    ferry_value_release(args);
    ferry_tensor *out = emb ? lstm_forward(m, ferry_value_as_tensor(emb)) : NULL;
    ferry_value_release(emb);
    args = out ? ferry_args(1, ferry_tensor_value(out)) : NULL;
    ferry_value *dec = args ? ferry_rref_call_sync(m->dec, "forward", args, NULL,
                                                   FERRY_TIMEOUT_DEFAULT)
                            : NULL;
    ferry_value_release(args);
    ferry_tensor_release(out);
    const int64_t flat[2] = {SEQ * BATCH, VOCAB}, flat_y = SEQ * BATCH;
    ferry_tensor *logits = dec ? ferry_reshape(ferry_value_as_tensor(dec), 2, flat) : NULL;
    ferry_tensor *targets = logits ? ferry_reshape(y, 1, &flat_y) : NULL;
    ferry_tensor *loss = targets ? ferry_cross_entropy(logits, targets, FERRY_REDUCTION_MEAN)
                                 : NULL;
    ferry_tensor_release(targets);
    ferry_tensor_release(logits);
    ferry_value_release(dec);
    return loss;
}

/* One step in its own context: forward, backward across the three processes, and the
   optimizer's step on every owner. Ending the context lets every worker drop what it
   recorded, on failure too. */
static int train_step(rnn_model *m, ferry_dist_optimizer *opt, ferry_tensor *x, ferry_tensor *y,
                      double *loss_out)
{
    int64_t ctx = ferry_dist_autograd_context_begin();
    if (ctx < 0)
        return fail("dist_autograd_context_begin");
    int rc = 0;
    ferry_tensor *loss = model_loss(m, x, y);
    if (!loss)
        rc = fail("forward");
    if (rc == 0) {
        *loss_out = ferry_tensor_item(loss);
        if (ferry_dist_autograd_backward(ctx, &loss, 1, false) != FERRY_OK)
            rc = fail("dist_autograd_backward");
    }
    if (rc == 0 && ferry_dist_optimizer_step(opt, ctx) != FERRY_OK)
        rc = fail("dist_optimizer_step");
    ferry_tensor_release(loss);
    if (ferry_dist_autograd_context_end(ctx) != FERRY_OK && rc == 0)
        rc = fail("dist_autograd_context_end");
    return rc;
}

/* ---- data ---- */

/* Batch after batch of sequences following next = (3 * token + 1) mod VOCAB from random
   starting tokens: x [SEQ, BATCH] and y [SEQ, BATCH] (x shifted by one position), int64. */
static int make_batch(ferry_generator *gen, ferry_tensor **x, ferry_tensor **y)
{
    const int64_t bs = BATCH, xs[2] = {SEQ, BATCH};
    ferry_tensor *u = ferry_rand(1, &bs, FERRY_FLOAT64, gen);
    *x = ferry_zeros(2, xs, FERRY_INT64);
    *y = ferry_zeros(2, xs, FERRY_INT64);
    if (!u || !*x || !*y) {
        ferry_tensor_release(u);
        return fail("making a batch");
    }
    int64_t *xd = ferry_tensor_data(*x), *yd = ferry_tensor_data(*y);
    for (int b = 0; b < BATCH; b++) {
        int64_t tok = (int64_t)floor(ferry_tensor_item_at(u, b) * VOCAB);
        tok = tok < VOCAB ? tok : VOCAB - 1;
        for (int t = 0; t < SEQ; t++) {
            xd[t * BATCH + b] = tok;
            tok = (3 * tok + 1) % VOCAB;
            yd[t * BATCH + b] = tok;
        }
    }
    ferry_tensor_release(u);
    return 0;
}

/* The initial weights (fetched from their owners: to_here copies them) and every step's data,
   in one safetensors file. */
static int write_weights(const char *path, ferry_rref **params, ferry_tensor **xs,
                         ferry_tensor **ys, int steps)
{
    size_t n = N_PARAMS + 2 * (size_t)steps;
    char **names = calloc(n, sizeof *names);
    ferry_tensor **tensors = calloc(n, sizeof *tensors);
    ferry_value **fetched = calloc(N_PARAMS, sizeof *fetched);
    int rc = names && tensors && fetched ? 0 : (fprintf(stderr, "out of memory\n"), 1);
    for (size_t i = 0; rc == 0 && i < N_PARAMS; i++) {
        fetched[i] = ferry_rref_to_here(params[i], FERRY_TIMEOUT_DEFAULT);
        tensors[i] = ferry_value_as_tensor(fetched[i]);
        names[i] = strdup(param_names[i]);
        if (!tensors[i])
            rc = fail("fetching the initial weights");
    }
    for (int s = 0; rc == 0 && s < steps; s++) {
        char buf[32];
        size_t k = N_PARAMS + 2 * (size_t)s;
        snprintf(buf, sizeof buf, "data.x.%d", s);
        names[k] = strdup(buf);
        snprintf(buf, sizeof buf, "data.y.%d", s);
        names[k + 1] = strdup(buf);
        tensors[k] = xs[s];
        tensors[k + 1] = ys[s];
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!names[i])
            rc = (fprintf(stderr, "out of memory\n"), 1);
    if (rc == 0 && ferry_safetensors_save(path, (const char *const *)names, tensors, n) != FERRY_OK)
        rc = fail("safetensors_save");
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    for (size_t i = 0; fetched && i < N_PARAMS; i++)
        ferry_value_release(fetched[i]);
    free(names);
    free(tensors);
    free(fetched);
    return rc;
}

/* ---- the master ---- */

static int train(rnn_model *m, ferry_dist_optimizer *opt, ferry_tensor **xs, ferry_tensor **ys,
                 const options *o)
{
    double first = NAN, last = NAN, timed_s = 0;
    int warmup = o->bench ? WARMUP : 0;
    for (int s = 0; s < o->steps; s++) {
        double loss = NAN, t0 = now_s();
        if (train_step(m, opt, xs[s], ys[s], &loss) != 0)
            return 1;
        if (s >= warmup)
            timed_s += now_s() - t0;
        printf("step %d loss %.9f\n", s, loss);
        fflush(stdout);
        first = s == 0 ? loss : first;
        last = loss;
    }
    if (!(last < first)) {
        fprintf(stderr, "the loss did not fall: first %.9f, last %.9f\n", first, last);
        return 1;
    }
    printf("loss fell from %.6f to %.6f in %d steps\n", first, last, o->steps);
    if (o->bench)
        printf("step_ms %.3f\n", 1e3 * timed_s / o->bench);
    return 0;
}

static int run_master(const options *o)
{
    rnn_model m = {0};
    ferry_rref *params[N_PARAMS] = {NULL};
    ferry_tensor **xs = calloc((size_t)o->steps, sizeof *xs);
    ferry_tensor **ys = calloc((size_t)o->steps, sizeof *ys);
    ferry_generator *gen = ferry_generator_new(SEED_DATA);
    ferry_dist_optimizer *opt = NULL;
    int rc = xs && ys && gen ? 0 : fail("allocating the data");
    for (int s = 0; rc == 0 && s < o->steps; s++)
        rc = make_batch(gen, &xs[s], &ys[s]);
    if (rc == 0)
        rc = model_new(&m);
    if (rc == 0)
        rc = model_param_rrefs(&m, params);
    if (rc == 0 && o->weights_out)
        rc = write_weights(o->weights_out, params, xs, ys, o->steps);
    if (rc == 0) {
        ferry_optim_options so;
        ferry_optim_options_init(&so, FERRY_SGD);
        so.lr = LR;
        opt = ferry_dist_optimizer_new(FERRY_SGD, &so, params, N_PARAMS);
        rc = opt ? 0 : fail("dist_optimizer_new");
    }
    if (rc == 0)
        rc = train(&m, opt, xs, ys, o);
    ferry_dist_optimizer_free(opt);
    for (int i = 0; i < N_PARAMS; i++)
        ferry_rref_release(params[i]);
    model_free(&m);
    for (int s = 0; s < o->steps; s++) {
        ferry_tensor_release(xs ? xs[s] : NULL);
        ferry_tensor_release(ys ? ys[s] : NULL);
    }
    free(xs);
    free(ys);
    ferry_generator_free(gen);
    return rc;
}

static int run_rank(int rank, void *user)
{
    const options *o = user;
    static const char *const names[WORLD] = {"master", "worker1", "worker2"};
    const char *ws = getenv("WORLD_SIZE");
    if (rank < 0 || rank >= WORLD || (ws && atoi(ws) != WORLD)) {
        fprintf(stderr, "model_parallel_rnn runs as exactly %d ranks\n", WORLD);
        return 1;
    }
    ferry_class_def emb_def = {.construct = embedding_table_new, .destroy = embedding_table_free,
                               .methods = embedding_table_methods, .n_methods = 2};
    ferry_class_def dec_def = {.construct = decoder_new, .destroy = decoder_free,
                               .methods = decoder_methods, .n_methods = 2};
    /* Before init, so no peer can ask for a class that is not there yet. */
    if (ferry_register_class("EmbeddingTable", &emb_def) != FERRY_OK ||
        ferry_register_class("Decoder", &dec_def) != FERRY_OK)
        return fail("register_class");
    if (ferry_init_rpc(names[rank], rank, WORLD, NULL) != FERRY_OK)
        return fail("init_rpc");
    int rc = rank == 0 ? run_master(o) : 0;
    return example_shutdown(names[rank], rc);
}

int main(int argc, char **argv)
{
    options o = {.steps = STEPS};
    int bench = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps")) {
            if (example_parse_count("--steps", i + 1 < argc ? argv[++i] : NULL, &o.steps))
                return 2;
        } else if (!strcmp(argv[i], "--bench")) {
            if (example_parse_count("--bench", i + 1 < argc ? argv[++i] : NULL, &bench))
                return 2;
        } else if (!strcmp(argv[i], "--weights-out") && i + 1 < argc) {
            o.weights_out = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--steps N] [--weights-out FILE] [--bench N]\n", argv[0]);
            return 2;
        }
    }
    if (bench) {
        o.bench = bench;
        o.steps = WARMUP + bench;
    }
    example_job job = {.name = "model-parallel-rnn", .world = WORLD, .deadline_s = DEADLINE_S};
    return example_main(&job, run_rank, &o);
}
