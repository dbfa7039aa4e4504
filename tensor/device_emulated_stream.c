/* Emulated streams and events. A stream is a FIFO of operations drained by its own thread, so
   copy and memset return before the bytes move, as on a GPU: an operation gets a sequence number
   when it is queued and the stream's `completed` counter passes it once it ran. An event is a
   (stream, sequence number) pair taken at record time; it completes when that stream's counter
   reaches the number. stream_wait queues an operation that blocks the waiting stream's thread
   until the other stream passed the event, so the host never waits for it.

   With FERRY_EMULATE_DEVICE_DELAY_US=N every operation waits N microseconds before it runs: code
   that reads device memory without waiting for the stream then sees stale bytes.

   An H2D copy from ordinary (pageable) host memory copies its source when it is queued, as CUDA
   does for pageable memory, so the caller may reuse the buffer at once; from page-locked memory
   (host_alloc) it reads the source when it runs, like a DMA, so the caller must keep it until
   the stream passed the copy.

   Lifetimes: a stream is refcounted (its creator, events recorded on it, waits queued on other
   streams), so an event outlives the stream it was recorded on. Threads start with the first
   operation; at process exit a destructor drains and joins them, after which operations run on
   the calling thread. A forked child starts fresh threads when it first queues work. */
#include "tensor/device_emulated.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"

typedef enum { OP_COPY, OP_MEMSET, OP_WAIT, OP_FREE } op_kind;

typedef struct op {
    struct op *next;
    op_kind kind;
    uint64_t seq;
    void *dst;
    const void *src;
    void *snapshot; /* owned copy of a pageable H2D source */
    size_t nbytes;
    int byte;               /* memset */
    int index;              /* free: the device */
    ferry__stream *wait_on; /* wait: the stream (a reference) */
    uint64_t wait_seq;
} op;

struct ferry__stream {
    int index;
    atomic_int refs;
    pthread_mutex_t lock;  /* guards everything below */
    pthread_cond_t work;   /* signalled when an operation is queued or the thread must stop */
    pthread_cond_t done;   /* broadcast when `completed` moves */
    op *head, *tail;
    uint64_t queued;       /* sequence number of the last operation queued */
    uint64_t completed;    /* every operation up to this one ran */
    bool has_thread;       /* a thread drains the queue */
    bool stopped;          /* the process is exiting: operations run on the caller */
    pthread_t thread;
    struct ferry__stream *next_live, *prev_live; /* guarded by live_lock */
};

struct ferry__event {
    int index;
    pthread_mutex_t lock; /* guards stream and seq */
    ferry__stream *stream; /* NULL until recorded: an unrecorded event is complete */
    uint64_t seq;
};

/* Every stream not yet freed, for the exit destructor and fork. Guarded by live_lock. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static ferry__stream *live;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void stream_release(ferry__stream *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->done);
    ferry__free(s);
}

static void delay(void)
{
    unsigned us = ferry__emu_delay_us();
    if (us == 0)
        return;
    struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void wait_for(ferry__stream *s, uint64_t seq)
{
    pthread_mutex_lock(&s->lock);
    while (s->completed < seq)
        pthread_cond_wait(&s->done, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

static void run_op(op *o)
{
    switch (o->kind) {
    case OP_COPY:
        memmove(o->dst, o->snapshot ? o->snapshot : o->src, o->nbytes);
        break;
    case OP_MEMSET:
        memset(o->dst, o->byte, o->nbytes);
        break;
    case OP_WAIT:
        wait_for(o->wait_on, o->wait_seq);
        stream_release(o->wait_on);
        break;
    case OP_FREE:
        ferry__emu_release(o->index, o->dst);
        break;
    }
    ferry__free(o->snapshot);
    ferry__free(o);
}

static void finish(ferry__stream *s, uint64_t seq)
{
    pthread_mutex_lock(&s->lock);
    if (seq > s->completed)
        s->completed = seq;
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->lock);
}

static void *drain(void *arg)
{
    ferry__stream *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopped)
            pthread_cond_wait(&s->work, &s->lock);
        if (!s->head)
            break; /* stopped with nothing left */
        op *o = s->head;
        s->head = o->next;
        if (!s->head)
            s->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        uint64_t seq = o->seq;
        delay();
        run_op(o);
        pthread_mutex_lock(&s->lock);
        s->completed = seq;
        pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Queues `o` (or runs it here once the process is exiting). Takes ownership of o. */
static ferry_status enqueue(ferry__stream *s, op *o)
{
    pthread_mutex_lock(&s->lock);
    o->seq = ++s->queued;
    if (s->stopped) {
        pthread_mutex_unlock(&s->lock);
        uint64_t seq = o->seq;
        wait_for(s, seq - 1); /* the thread may still be running what came before */
        run_op(o);
        finish(s, seq);
        return FERRY_OK;
    }
    if (!s->has_thread) {
        int err = pthread_create(&s->thread, NULL, drain, s);
        if (err != 0) {
            s->queued--;
            pthread_mutex_unlock(&s->lock);
            ferry__free(o->snapshot);
            ferry__free(o);
            return ferry__fail(FERRY_EDEVICE, "cuda:%d: cannot start the thread of an emulated "
                               "stream: %s", s->index, strerror(err));
        }
        s->has_thread = true;
    }
    o->next = NULL;
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
    return FERRY_OK;
}

static op *op_new(ferry__stream *s, op_kind kind)
{
    op *o = ferry__calloc(1, sizeof *o);
    if (!o)
        ferry__fail(FERRY_ENOMEM, "cuda:%d: out of memory queueing work on a stream", s->index);
    else
        o->kind = kind;
    return o;
}

ferry_status ferry__emu_copy(ferry__stream *s, void *dst, const void *src, size_t nbytes,
                             ferry__copy_kind kind)
{
    if (nbytes == 0)
        return FERRY_OK;
    op *o = op_new(s, OP_COPY);
    if (!o)
        return FERRY_ENOMEM;
    o->dst = dst;
    o->src = src;
    o->nbytes = nbytes;
    if (kind == FERRY__COPY_H2D && !ferry__emu_is_pinned(src, nbytes)) {
        o->snapshot = ferry__malloc(nbytes);
        if (!o->snapshot) {
            ferry__free(o);
            return ferry__fail(FERRY_ENOMEM, "cuda:%d: out of host memory staging a %zu-byte "
                               "copy from pageable memory", s->index, nbytes);
        }
        memcpy(o->snapshot, src, nbytes);
    }
    return enqueue(s, o);
}

ferry_status ferry__emu_memset(ferry__stream *s, void *dst, int byte, size_t nbytes)
{
    if (nbytes == 0)
        return FERRY_OK;
    op *o = op_new(s, OP_MEMSET);
    if (!o)
        return FERRY_ENOMEM;
    o->dst = dst;
    o->byte = byte;
    o->nbytes = nbytes;
    return enqueue(s, o);
}

void ferry__emu_free_on(ferry__stream *s, int index, void *ptr)
{
    op *o = op_new(s, OP_FREE);
    if (o) {
        o->index = index;
        o->dst = ptr;
        if (enqueue(s, o) == FERRY_OK)
            return;
    }
    /* no memory to queue the free: wait for the stream, free it here */
    ferry__emu_stream_sync(s);
    ferry__emu_release(index, ptr);
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&live_lock);
    for (ferry__stream *s = live; s; s = s->next_live) {
        pthread_mutex_lock(&s->lock);
        uint64_t seq = s->queued;
        pthread_mutex_unlock(&s->lock);
        wait_for(s, seq);
    }
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&live_lock);
}

/* The child has no stream threads: it starts new ones when it queues work. */
static void atfork_child(void)
{
    for (ferry__stream *s = live; s; s = s->next_live) {
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->work, NULL);
        pthread_cond_init(&s->done, NULL);
        s->has_thread = false;
        s->head = s->tail = NULL;
        s->completed = s->queued;
    }
    pthread_mutex_init(&live_lock, NULL);
}

static void install_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

ferry_status ferry__emu_stream_new(int index, ferry__stream **out)
{
    pthread_once(&atfork_once, install_atfork);
    ferry__stream *s = ferry__calloc(1, sizeof *s);
    if (!s)
        return ferry__fail(FERRY_ENOMEM, "cuda:%d: out of memory for a stream", index);
    s->index = index;
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->done, NULL);
    pthread_mutex_lock(&live_lock);
    s->next_live = live;
    if (live)
        live->prev_live = s;
    live = s;
    pthread_mutex_unlock(&live_lock);
    *out = s;
    return FERRY_OK;
}

/* Runs what is queued, then joins the thread; later operations run on the caller. */
static void stream_stop(ferry__stream *s)
{
    pthread_mutex_lock(&s->lock);
    bool join = s->has_thread && !s->stopped;
    s->stopped = true;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
    if (join)
        pthread_join(s->thread, NULL);
}

void ferry__emu_stream_free(ferry__stream *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&live_lock);
    if (s->prev_live)
        s->prev_live->next_live = s->next_live;
    else
        live = s->next_live;
    if (s->next_live)
        s->next_live->prev_live = s->prev_live;
    pthread_mutex_unlock(&live_lock);
    stream_stop(s);
    stream_release(s);
}

__attribute__((destructor)) static void stop_all_streams(void)
{
    pthread_mutex_lock(&live_lock);
    for (ferry__stream *s = live; s; s = s->next_live)
        stream_stop(s);
    pthread_mutex_unlock(&live_lock);
}

ferry_status ferry__emu_stream_sync(ferry__stream *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t seq = s->queued;
    pthread_mutex_unlock(&s->lock);
    wait_for(s, seq);
    return FERRY_OK;
}

ferry_status ferry__emu_event_new(int index, ferry__event **out)
{
    ferry__event *e = ferry__calloc(1, sizeof *e);
    if (!e)
        return ferry__fail(FERRY_ENOMEM, "cuda:%d: out of memory for an event", index);
    e->index = index;
    pthread_mutex_init(&e->lock, NULL);
    *out = e;
    return FERRY_OK;
}

void ferry__emu_event_free(ferry__event *e)
{
    if (!e)
        return;
    stream_release(e->stream);
    pthread_mutex_destroy(&e->lock);
    ferry__free(e);
}

ferry_status ferry__emu_event_record(ferry__event *e, ferry__stream *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t seq = s->queued;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_lock(&e->lock);
    ferry__stream *old = e->stream;
    e->stream = s;
    e->seq = seq;
    pthread_mutex_unlock(&e->lock);
    stream_release(old);
    return FERRY_OK;
}

/* The stream and sequence number the event stands for, the stream retained (NULL: complete). */
static ferry__stream *event_target(ferry__event *e, uint64_t *seq)
{
    pthread_mutex_lock(&e->lock);
    ferry__stream *s = e->stream;
    *seq = e->seq;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&e->lock);
    return s;
}

ferry_status ferry__emu_stream_wait(ferry__stream *s, ferry__event *e)
{
    uint64_t seq;
    ferry__stream *target = event_target(e, &seq);
    if (!target)
        return FERRY_OK;
    if (target == s) { /* a stream runs in order: nothing to wait for */
        stream_release(target);
        return FERRY_OK;
    }
    op *o = op_new(s, OP_WAIT);
    if (!o) {
        stream_release(target);
        return FERRY_ENOMEM;
    }
    o->wait_on = target;
    o->wait_seq = seq;
    ferry_status rc = enqueue(s, o); /* on failure the op, not the reference, is gone */
    if (rc != FERRY_OK)
        stream_release(target);
    return rc;
}

ferry_status ferry__emu_event_sync(ferry__event *e)
{
    uint64_t seq;
    ferry__stream *s = event_target(e, &seq);
    if (s) {
        wait_for(s, seq);
        stream_release(s);
    }
    return FERRY_OK;
}

ferry_status ferry__emu_event_query(ferry__event *e, bool *done)
{
    uint64_t seq;
    ferry__stream *s = event_target(e, &seq);
    *done = true;
    if (s) {
        pthread_mutex_lock(&s->lock);
        *done = s->completed >= seq;
        pthread_mutex_unlock(&s->lock);
        stream_release(s);
    }
    return FERRY_OK;
}
