/* The carriers of thread-local state registered by the modules above core (core/carry.h). */
#include "core/carry.h"

#include <stddef.h>

static const ferry__carrier *carriers[FERRY__MAX_CARRIERS];
static int n_carriers;

void ferry__carrier_register(const ferry__carrier *carrier)
{
    if (carrier != NULL && n_carriers < FERRY__MAX_CARRIERS)
        carriers[n_carriers++] = carrier;
}

void ferry__carry_capture(ferry__carried *out)
{
    for (int i = 0; i < n_carriers; i++)
        out->state[i] = carriers[i]->capture();
}

void ferry__carry_enter(const ferry__carried *in, ferry__carried *saved)
{
    for (int i = 0; i < n_carriers; i++)
        saved->state[i] = carriers[i]->install(in->state[i]);
}

void ferry__carry_leave(const ferry__carried *saved)
{
    for (int i = n_carriers - 1; i >= 0; i--)
        carriers[i]->restore(saved->state[i]);
}
