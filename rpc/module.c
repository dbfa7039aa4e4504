/* The table of modules that plug into every agent (rref/, autograd/dist/, ...), and the calls
   of their hooks on one agent's messages. The table is filled by constructors before main and
   read-only afterwards, so readers need no lock; each agent indexes the hooks its started
   modules have, so a message pays only for the hooks that exist. */
#include "rpc/module.h"

#include <stddef.h>
#include <string.h>

#include "rpc/agent_impl.h"

#include "core/log.h"

static const ferry__agent_module *modules[FERRY__MAX_MODULES];
static int n_modules;

void ferry__agent_register_module(const ferry__agent_module *module)
{
    if (n_modules == FERRY__MAX_MODULES) {
        ferry__log_error("rpc", "too many agent modules; '%s' is not registered", module->name);
        return;
    }
    modules[n_modules++] = module;
}

int ferry__agent_module_count(void)
{
    return n_modules;
}

const ferry__agent_module *ferry__agent_module_at(int i)
{
    return i >= 0 && i < n_modules ? modules[i] : NULL;
}

void *ferry__agent_module_state(ferry__agent *agent, const ferry__agent_module *module)
{
    for (int i = 0; i < n_modules; i++)
        if (modules[i] == module)
            return agent->module_state[i];
    return NULL;
}

/* ---- the hooks of one agent ---- */

void ferry__agent_index_hooks(ferry__agent *a)
{
    memset(&a->hooks, 0, sizeof a->hooks);
    for (int i = 0; i < n_modules; i++) {
        const ferry__agent_module *m = modules[i];
        if (!a->module_started[i])
            continue;
        if (m->on_send)
            a->hooks.on_send[a->hooks.n_on_send++] = i;
        if (m->on_receive)
            a->hooks.on_receive[a->hooks.n_on_receive++] = i;
        if (m->before_call)
            a->hooks.before_call[a->hooks.n_before_call++] = i;
        if (m->before_request || m->after_request)
            a->hooks.around[a->hooks.n_around++] = i;
        if (m->tick)
            a->hooks.tick[a->hooks.n_tick++] = i;
    }
}

ferry_status ferry__agent_hooks_send(ferry__agent *a, int dst, ferry__msg *m,
                                     const ferry__msg *request)
{
    for (int k = 0; k < a->hooks.n_on_send; k++) {
        int i = a->hooks.on_send[k];
        ferry_status rc = modules[i]->on_send(a, a->module_state[i], dst, m, request);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

ferry_status ferry__agent_hooks_receive(ferry__agent *a, int src, ferry__msg *m)
{
    for (int k = 0; k < a->hooks.n_on_receive; k++) {
        int i = a->hooks.on_receive[k];
        ferry_status rc = modules[i]->on_receive(a, a->module_state[i], src, m);
        if (rc != FERRY_OK)
            return rc;
    }
    return FERRY_OK;
}

void ferry__agent_hooks_begin(ferry__agent *a, int src, const ferry__msg *m, void **slots)
{
    for (int k = 0; k < a->hooks.n_around; k++) {
        int i = a->hooks.around[k];
        slots[k] = NULL;
        if (modules[i]->before_request)
            modules[i]->before_request(a, a->module_state[i], src, m, &slots[k]);
    }
}

void ferry__agent_hooks_end(ferry__agent *a, void **slots)
{
    for (int k = a->hooks.n_around - 1; k >= 0; k--) {
        int i = a->hooks.around[k];
        if (modules[i]->after_request)
            modules[i]->after_request(a, a->module_state[i], slots[k]);
    }
}

void ferry__agent_hooks_tick(ferry__agent *a, long long now_ns)
{
    for (int k = 0; k < a->hooks.n_tick; k++) {
        int i = a->hooks.tick[k];
        modules[i]->tick(a, a->module_state[i], now_ns);
    }
}

void ferry__agent_hooks_peer_lost(ferry__agent *a, int rank, bool gone, const char *why)
{
    for (int i = 0; i < n_modules; i++)
        if (modules[i]->peer_lost && a->module_started[i])
            modules[i]->peer_lost(a, a->module_state[i], rank, gone, why);
}
