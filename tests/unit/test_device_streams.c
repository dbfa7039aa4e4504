/* Unit tests for the emulation's streams: work queued on a stream runs later, in order, on the
   stream's own thread; events and stream_wait order two streams; pageable H2D sources are
   copied when queued, page-locked ones read when the copy runs. FERRY_EMULATE_DEVICE_DELAY_US
   holds every operation back, so a missing wait would read stale bytes. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/test_util.h"
#include "tensor/device.h"

#define DELAY_US "100000" /* 0.1 s: far longer than the few calls between queueing and checking */

static const ferry__device_ops *setup(const char *devices)
{
    setenv("FERRY_EMULATE_DEVICES", devices, 1);
    setenv("FERRY_EMULATE_DEVICE_DELAY_US", DELAY_US, 1);
    const ferry__device_ops *ops = ferry__device_ops_get();
    cr_assert_not_null(ops);
    return ops;
}

static void *dev_alloc(int index, size_t n)
{
    void *p = NULL;
    ferry_assert_ok(ferry__device_alloc(index, n, &p));
    return p;
}

Test(device_stream, returns_before_copy_then_d2h_sees_new_data_when_synced, .timeout = 10)
{
    const ferry__device_ops *ops = setup("1");
    ferry__stream *s = ferry_assert_ptr(ferry__device_stream(0));
    int *dev = dev_alloc(0, 64 * sizeof(int));
    memset(dev, 0, 64 * sizeof(int)); /* emulated memory is host memory: start from zeros */
    int src[64], out[64];
    for (int i = 0; i < 64; i++) {
        src[i] = i + 1;
        out[i] = -1;
    }
    ferry_assert_ok(ops->copy(s, dev, src, sizeof src, FERRY__COPY_H2D));
    ferry_assert_ok(ops->copy(s, out, dev, sizeof out, FERRY__COPY_D2H));
    cr_assert_eq(out[5], -1, "the D2H copy ran before its stream reached it");
    cr_assert_eq(dev[5], 0, "the H2D copy ran when it was queued");
    ferry_assert_ok(ops->stream_sync(s));
    for (int i = 0; i < 64; i++)
        cr_assert_eq(out[i], i + 1, "out[%d]", i);
    ferry__device_free(0, dev, 64 * sizeof(int));
}

Test(device_stream, snapshots_pageable_source_when_h2d_queued, .timeout = 10)
{
    const ferry__device_ops *ops = setup("1");
    ferry__stream *s = ferry_assert_ptr(ferry__device_stream(0));
    int *dev = dev_alloc(0, sizeof(int));
    int src = 7;
    ferry_assert_ok(ops->copy(s, dev, &src, sizeof src, FERRY__COPY_H2D));
    src = 8; /* pageable memory: the copy took the value it had when queued */
    ferry_assert_ok(ops->stream_sync(s));
    cr_assert_eq(*dev, 7);
    ferry__device_free(0, dev, sizeof(int));
}

Test(device_stream, reads_pinned_source_when_copy_runs, .timeout = 10)
{
    const ferry__device_ops *ops = setup("1");
    ferry__stream *s = ferry_assert_ptr(ferry__device_stream(0));
    int *dev = dev_alloc(0, 4 * sizeof(int));
    int *pinned = NULL;
    ferry_assert_ok(ops->host_alloc(4 * sizeof(int), (void **)&pinned));
    for (int i = 0; i < 4; i++)
        pinned[i] = 7;
    ferry_assert_ok(ops->copy(s, dev, pinned + 1, 2 * sizeof(int), FERRY__COPY_H2D));
    pinned[1] = 8; /* page-locked memory is read by the copy itself, as a DMA would */
    ferry_assert_ok(ops->stream_sync(s));
    cr_assert_eq(dev[0], 8);
    cr_assert_eq(dev[1], 7);
    ops->host_free(pinned);
    ferry__device_free(0, dev, 4 * sizeof(int));
}

Test(device_stream, orders_two_streams_when_event_waited, .timeout = 10)
{
    const ferry__device_ops *ops = setup("2");
    ferry__stream *a = ferry_assert_ptr(ferry__device_stream(0));
    ferry__stream *b = NULL;
    ferry_assert_ok(ops->stream_new(0, &b));
    ferry__event *e = NULL;
    ferry_assert_ok(ops->event_new(0, &e));
    int *dev = dev_alloc(0, 16 * sizeof(int));
    memset(dev, 0, 16 * sizeof(int));
    int src[16], out[16];
    for (int i = 0; i < 16; i++) {
        src[i] = 100 + i;
        out[i] = -1;
    }
    ferry_assert_ok(ops->copy(a, dev, src, sizeof src, FERRY__COPY_H2D));
    ferry_assert_ok(ops->copy(a, dev, src, sizeof src, FERRY__COPY_H2D)); /* a is 0.2 s behind */
    ferry_assert_ok(ops->event_record(e, a));
    bool done = true;
    ferry_assert_ok(ops->event_query(e, &done));
    cr_assert_not(done, "the event completed before its stream passed it");
    ferry_assert_ok(ops->stream_wait(b, e)); /* the host does not wait here */
    ferry_assert_ok(ops->copy(b, out, dev, sizeof out, FERRY__COPY_D2H));
    ferry_assert_ok(ops->stream_sync(b));
    for (int i = 0; i < 16; i++)
        cr_assert_eq(out[i], 100 + i, "out[%d]: b read before a's event", i);
    ferry_assert_ok(ops->event_sync(e));
    ferry_assert_ok(ops->event_query(e, &done));
    cr_assert(done);
    ops->event_free(e);
    ops->stream_free(b);
    ferry__device_free(0, dev, 16 * sizeof(int));
}

Test(device_stream, completes_unrecorded_event_and_outlives_its_stream, .timeout = 10)
{
    const ferry__device_ops *ops = setup("1");
    ferry__event *e = NULL;
    ferry_assert_ok(ops->event_new(0, &e));
    bool done = false;
    ferry_assert_ok(ops->event_query(e, &done));
    cr_assert(done, "an event never recorded is complete");
    ferry_assert_ok(ops->event_sync(e));
    ferry__stream *s = NULL;
    ferry_assert_ok(ops->stream_new(0, &s));
    char byte = 0;
    ferry_assert_ok(ops->memset(s, &byte, 9, 1));
    ferry_assert_ok(ops->event_record(e, s));
    ops->stream_free(s); /* runs what was queued, then goes; the event still answers */
    cr_assert_eq(byte, 9);
    ferry_assert_ok(ops->event_query(e, &done));
    cr_assert(done);
    ops->event_free(e);
}

Test(device_stream, memsets_in_queue_order_when_mixed_with_copies, .timeout = 10)
{
    const ferry__device_ops *ops = setup("1");
    ferry__stream *s = ferry_assert_ptr(ferry__device_stream(0));
    unsigned char *dev = dev_alloc(0, 32);
    unsigned char out[32];
    ferry_assert_ok(ops->memset(s, dev, 0xab, 32));
    ferry_assert_ok(ops->memset(s, dev + 8, 0x01, 8));
    ferry_assert_ok(ops->copy(s, out, dev, 32, FERRY__COPY_D2H));
    ferry_assert_ok(ferry__device_sync(0));
    for (int i = 0; i < 32; i++)
        cr_assert_eq(out[i], i >= 8 && i < 16 ? 0x01 : 0xab, "out[%d]", i);
    ferry__device_free(0, dev, 32);
}

Test(device_stream, copies_between_devices_after_the_source_stream, .timeout = 10)
{
    const ferry__device_ops *ops = setup("2");
    int *d0 = dev_alloc(0, sizeof(int)), *d1 = dev_alloc(1, sizeof(int));
    int v = 41;
    ferry_assert_ok(ops->copy(ferry__device_stream(0), d0, &v, sizeof v, FERRY__COPY_H2D));
    /* the synchronous copy waits for cuda:0's pending write before reading it */
    ferry_assert_ok(ferry__device_copy_sync(d1, FERRY_DEVICE_CUDA(1), d0, FERRY_DEVICE_CUDA(0),
                                            sizeof v));
    int out = 0;
    ferry_assert_ok(ferry__device_copy_sync(&out, FERRY_DEVICE_CPU, d1, FERRY_DEVICE_CUDA(1),
                                            sizeof out));
    cr_assert_eq(out, 41);
    ferry__device_free(0, d0, sizeof(int));
    ferry__device_free(1, d1, sizeof(int));
}

/* Many streams made and freed, each with work: every thread is joined (ASan/LSan see no leak). */
Test(device_stream, joins_threads_when_streams_freed, .timeout = 20)
{
    setenv("FERRY_EMULATE_DEVICES", "1", 1);
    const ferry__device_ops *ops = ferry__device_ops_get();
    for (int i = 0; i < 50; i++) {
        ferry__stream *s = NULL;
        ferry_assert_ok(ops->stream_new(0, &s));
        int a = i, b = 0;
        ferry_assert_ok(ops->copy(s, &b, &a, sizeof a, FERRY__COPY_H2D));
        ops->stream_free(s);
        cr_assert_eq(b, i);
    }
}

/* A forked child has no stream threads: it starts its own and its copies still complete. */
Test(device_stream, works_in_a_forked_child_when_parent_had_streams, .timeout = 20)
{
    const ferry__device_ops *ops = setup("1");
    int *dev = dev_alloc(0, sizeof(int));
    int v = 5;
    ferry_assert_ok(ops->copy(ferry__device_stream(0), dev, &v, sizeof v, FERRY__COPY_H2D));
    pid_t pid = fork(); /* the fork waits for the queued copy */
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int out = 0, w = 6;
        int ok = *dev == 5;
        ok = ok && ops->copy(ferry__device_stream(0), dev, &w, sizeof w, FERRY__COPY_H2D) == 0;
        ok = ok && ferry__device_copy_sync(&out, FERRY_DEVICE_CPU, dev, FERRY_DEVICE_CUDA(0),
                                           sizeof out) == FERRY_OK;
        _exit(ok && out == 6 ? 0 : 1);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's copies failed");
    ferry_assert_ok(ferry__device_sync(0));
    cr_assert_eq(*dev, 5, "the child's write stays in the child");
    ferry__device_free(0, dev, sizeof(int));
}
