/* What the two halves of the emulation share: device memory and settings (device_emulated.c)
   and the streams whose threads run queued work (device_emulated_stream.c). */
#ifndef FERRY_TENSOR_DEVICE_EMULATED_H
#define FERRY_TENSOR_DEVICE_EMULATED_H

#include <stdbool.h>
#include <stddef.h>

#include "tensor/device.h"

/* FERRY_EMULATE_DEVICE_DELAY_US: how long each queued operation waits before it runs. */
unsigned ferry__emu_delay_us(void);
/* True when [p, p + n) lies inside one block of page-locked memory from host_alloc. */
bool ferry__emu_is_pinned(const void *p, size_t n);
/* Gives a device block back to its device's count now (the queued free's work). */
void ferry__emu_release(int index, void *ptr);

ferry_status ferry__emu_copy(ferry__stream *s, void *dst, const void *src, size_t nbytes,
                             ferry__copy_kind kind);
ferry_status ferry__emu_memset(ferry__stream *s, void *dst, int byte, size_t nbytes);
/* Queues the release of a device block after the work queued on `s` so far. */
void ferry__emu_free_on(ferry__stream *s, int index, void *ptr);
ferry_status ferry__emu_stream_new(int index, ferry__stream **out);
void ferry__emu_stream_free(ferry__stream *s);
ferry_status ferry__emu_stream_sync(ferry__stream *s);
ferry_status ferry__emu_event_new(int index, ferry__event **out);
void ferry__emu_event_free(ferry__event *e);
ferry_status ferry__emu_event_record(ferry__event *e, ferry__stream *s);
ferry_status ferry__emu_stream_wait(ferry__stream *s, ferry__event *e);
ferry_status ferry__emu_event_sync(ferry__event *e);
ferry_status ferry__emu_event_query(ferry__event *e, bool *done);

#endif
