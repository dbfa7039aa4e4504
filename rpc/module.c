/* The table of modules that plug into every agent (rref/, autograd/). Filled by constructors
   before main and read-only afterwards, so readers need no lock. */
#include "rpc/agent.h"

#include <stddef.h>

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
