/* Thread-local state that follows work to the thread that runs it. A module above core keeps
   some per-thread state that a callback must see as its creator did (distributed autograd's
   current context: a then-callback of a future made inside a context runs inside it, as
   torch's). It registers a carrier; core captures every carrier's state where such work is
   created and installs it around the run. States are int64 values the carrier gives meaning
   to. */
#ifndef FERRY_CORE_CARRY_H
#define FERRY_CORE_CARRY_H

#include <stdint.h>

#define FERRY__MAX_CARRIERS 4

typedef struct {
    int64_t (*capture)(void);          /* this thread's state */
    int64_t (*install)(int64_t state); /* makes it this thread's; returns what was there */
    void (*restore)(int64_t previous); /* puts back what install returned */
} ferry__carrier;

typedef struct {
    int64_t state[FERRY__MAX_CARRIERS];
} ferry__carried;

/* From a constructor (not thread-safe); past FERRY__MAX_CARRIERS the carrier is ignored. */
void ferry__carrier_register(const ferry__carrier *carrier);
void ferry__carry_capture(ferry__carried *out);
/* Installs `in` on this thread, keeping what was there in *saved for ferry__carry_leave. */
void ferry__carry_enter(const ferry__carried *in, ferry__carried *saved);
void ferry__carry_leave(const ferry__carried *saved);

#endif
