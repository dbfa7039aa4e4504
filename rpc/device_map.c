/* Device maps across the group: the record each worker publishes, torch's checks over all of
   them at init, and the lookups of the codec (see device_map.h). */
#include "rpc/device_map.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "ferry/device.h"
#include "rpc/agent_impl.h"

static bool same(ferry_device a, ferry_device b)
{
    return a.type == b.type && (a.type == FERRY_CPU || a.index == b.index);
}

/* ---- the published record ---- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool failed;
} buf;

static void put(buf *b, const void *data, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = ferry__realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }

static void put_device(buf *b, ferry_device d)
{
    uint8_t type = (uint8_t)d.type;
    int32_t index = d.type == FERRY_CPU ? 0 : d.index;
    put(b, &type, 1);
    put(b, &index, 4);
}

ferry_status ferry__device_info_encode(const ferry_rpc_options *opts, uint8_t **out, size_t *len)
{
    buf b = {0};
    put_u32(&b, (uint32_t)ferry_cuda_device_count());
    const char *backend = ferry_device_backend();
    uint8_t blen = (uint8_t)strnlen(backend, 15);
    put(&b, &blen, 1);
    put(&b, backend, blen);
    put_u32(&b, (uint32_t)opts->n_devices);
    for (int i = 0; i < opts->n_devices; i++)
        put_device(&b, opts->devices[i]);
    put_u32(&b, (uint32_t)opts->n_device_maps);
    for (int i = 0; i < opts->n_device_maps; i++) {
        const ferry_device_map_entry *e = &opts->device_maps[i];
        uint8_t n = (uint8_t)strnlen(e->worker, FERRY_MAX_NAME_LEN - 1);
        put(&b, &n, 1);
        put(&b, e->worker, n);
        put_device(&b, e->from);
        put_device(&b, e->to);
    }
    if (b.failed) {
        ferry__free(b.p);
        return ferry__fail(FERRY_ENOMEM, "out of memory building the device record");
    }
    *out = b.p;
    *len = b.len;
    return FERRY_OK;
}

typedef struct {
    const uint8_t *p;
    size_t len, at;
    bool bad;
} rd;

static void get(rd *r, void *dst, size_t n)
{
    if (r->bad || r->len - r->at < n) {
        r->bad = true;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, r->p + r->at, n);
    r->at += n;
}

static ferry_device get_device(rd *r)
{
    uint8_t type = 0;
    int32_t index = 0;
    get(r, &type, 1);
    get(r, &index, 4);
    if (type == FERRY_CPU)
        return FERRY_DEVICE_CPU;
    if (type != FERRY_CUDA || index < 0)
        r->bad = true;
    return FERRY_DEVICE_CUDA(index);
}

ferry_status ferry__device_info_decode(const void *p, size_t len, const char *worker,
                                       ferry__device_info *out, size_t *used)
{
    rd r = {p, len, 0, false};
    uint32_t count = 0, n_devices = 0, n_maps = 0;
    memset(out, 0, sizeof *out);
    get(&r, &count, 4);
    uint8_t blen = 0;
    get(&r, &blen, 1);
    if (blen > 15)
        r.bad = true;
    else
        get(&r, out->backend, blen);
    get(&r, &n_devices, 4);
    if (count > 1024 || n_devices > FERRY_MAX_RPC_DEVICES)
        r.bad = true;
    for (uint32_t i = 0; i < n_devices && !r.bad; i++)
        out->devices[i] = get_device(&r);
    get(&r, &n_maps, 4);
    if (n_maps > FERRY_MAX_DEVICE_MAPS)
        r.bad = true;
    for (uint32_t i = 0; i < n_maps && !r.bad; i++) {
        ferry_device_map_entry *e = &out->maps[i];
        uint8_t n = 0;
        get(&r, &n, 1);
        if (n == 0 || n >= FERRY_MAX_NAME_LEN)
            r.bad = true;
        else
            get(&r, e->worker, n);
        e->from = get_device(&r);
        e->to = get_device(&r);
    }
    if (r.bad)
        return ferry__fail(FERRY_EPROTO, "the device record of worker %s is malformed", worker);
    out->count = (int)count;
    out->n_devices = (int)n_devices;
    out->n_maps = (int)n_maps;
    *used = r.at;
    return FERRY_OK;
}

/* ---- torch's checks ---- */

static int find_name(const ferry__device_maps *m, const char *name)
{
    for (int i = 0; i < m->world_size; i++)
        if (!strcmp(m->names[i], name))
            return i;
    return -1;
}

static bool valid_index(ferry_device d, int count)
{
    return d.type == FERRY_CPU || (d.index >= 0 && d.index < count);
}

static bool in_list(ferry_device d, const ferry__device_info *info)
{
    for (int i = 0; i < info->n_devices; i++)
        if (same(info->devices[i], d))
            return true;
    return false;
}

/* "{cuda:0: cuda:1, cpu: cuda:0}": the entries of `src`'s map toward `worker`. */
static void format_map(const ferry__device_info *src, const char *worker, char *out, size_t cap)
{
    size_t len = (size_t)snprintf(out, cap, "{");
    for (int i = 0; i < src->n_maps && len < cap; i++) {
        const ferry_device_map_entry *e = &src->maps[i];
        if (strcmp(e->worker, worker))
            continue;
        char f[32], t[32];
        ferry_device_format(e->from, f, sizeof f);
        ferry_device_format(e->to, t, sizeof t);
        len += (size_t)snprintf(out + len, cap - len, "%s%s: %s", len > 1 ? ", " : "", f, t);
    }
    if (len < cap)
        snprintf(out + len, cap - len, "}");
}

static ferry_status check_target(const ferry__device_maps *m, int src, const char *target)
{
    const ferry__device_info *si = &m->infos[src];
    const char *sname = m->names[src];
    int dst = find_name(m, target);
    const ferry__device_info *di = &m->infos[dst];
    char map[1024];
    format_map(si, target, map, sizeof map);
    for (int i = 0; i < si->n_maps; i++) {
        const ferry_device_map_entry *e = &si->maps[i];
        if (strcmp(e->worker, target))
            continue;
        for (int j = i + 1; j < si->n_maps; j++)
            if (!strcmp(si->maps[j].worker, target) && same(si->maps[j].to, e->to))
                return ferry__fail(FERRY_EINVAL, "Node %s has duplicated target devices in its "
                                   "device map for %s (device map = %s)", sname, target, map);
    }
    for (int i = 0; i < si->n_maps; i++) {
        const ferry_device_map_entry *e = &si->maps[i];
        if (strcmp(e->worker, target))
            continue;
        if (si->n_devices && !in_list(e->from, si))
            return ferry__fail(FERRY_EINVAL, "Node %s has unexpected source devices in its "
                               "device map for %s (device map = %s; its devices list has %d)",
                               sname, target, map, si->n_devices);
        if (!si->n_devices && !valid_index(e->from, si->count))
            return ferry__fail(FERRY_EINVAL, "Node %s has source devices with invalid indices "
                               "in its device map for %s (device map = %s; device count = %d)",
                               sname, target, map, si->count);
    }
    for (int i = 0; i < si->n_maps; i++) {
        const ferry_device_map_entry *e = &si->maps[i];
        if (strcmp(e->worker, target))
            continue;
        if (di->n_devices && !in_list(e->to, di))
            return ferry__fail(FERRY_EINVAL, "Node %s has unexpected target devices in its "
                               "device map for %s (device map = %s; the devices list of %s has "
                               "%d)", sname, target, map, target, di->n_devices);
        if (!di->n_devices && !valid_index(e->to, di->count))
            return ferry__fail(FERRY_EINVAL, "Node %s has target devices with invalid indices "
                               "in its device map for %s (device map = %s; device count of %s "
                               "= %d)", sname, target, map, target, di->count);
    }
    return FERRY_OK;
}

ferry_status ferry__device_maps_check(ferry__device_maps *m)
{
    for (int w = 0; w < m->world_size; w++) {
        const ferry__device_info *info = &m->infos[w];
        for (int i = 0; i < info->n_devices; i++) {
            for (int j = i + 1; j < info->n_devices; j++)
                if (same(info->devices[i], info->devices[j]))
                    return ferry__fail(FERRY_EINVAL, "Node %s has duplicated devices (cuda:%d)",
                                       m->names[w], info->devices[i].index);
            if (!valid_index(info->devices[i], info->count))
                return ferry__fail(FERRY_EINVAL, "Node %s has devices with invalid indices "
                                   "(cuda:%d; device count = %d)", m->names[w],
                                   info->devices[i].index, info->count);
        }
    }
    for (int w = 0; w < m->world_size; w++) {
        const ferry__device_info *info = &m->infos[w];
        for (int i = 0; i < info->n_maps; i++)
            if (find_name(m, info->maps[i].worker) < 0)
                return ferry__fail(FERRY_EINVAL, "Node %s has invalid target node names in its "
                                   "device maps (%s is not a worker of this group)", m->names[w],
                                   info->maps[i].worker);
        for (int i = 0; i < info->n_maps; i++) {
            bool seen = false;
            for (int j = 0; j < i && !seen; j++)
                seen = !strcmp(info->maps[j].worker, info->maps[i].worker);
            ferry_status rc = seen ? FERRY_OK : check_target(m, w, info->maps[i].worker);
            if (rc != FERRY_OK)
                return rc;
        }
    }
    m->any_cpu_map = false;
    for (int w = 0; w < m->world_size; w++) {
        const ferry__device_info *info = &m->infos[w];
        for (int i = 0; i < info->n_maps; i++) {
            const ferry_device_map_entry *e = &info->maps[i];
            if (w == m->rank && e->from.type == FERRY_CPU)
                m->any_cpu_map = true;
            if (!strcmp(e->worker, m->names[m->rank]) && e->to.type == FERRY_CPU)
                m->any_cpu_map = true;
        }
    }
    return FERRY_OK;
}

/* ---- lookups ---- */

ferry_status ferry__device_maps_lookup(const ferry__device_maps *m, int32_t dst, bool reverse,
                                       ferry_device from, ferry_device *to)
{
    if (dst < 0 || dst >= m->world_size)
        return ferry__fail(FERRY_EINVAL, "no worker of rank %d to map devices for", (int)dst);
    const char *me = m->names[m->rank];
    if (!reverse) {
        const ferry__device_info *info = &m->infos[m->rank];
        for (int i = 0; i < info->n_maps; i++) {
            const ferry_device_map_entry *e = &info->maps[i];
            if (same(e->from, from) && !strcmp(e->worker, m->names[dst])) {
                *to = e->to;
                return FERRY_OK;
            }
        }
    } else {
        const ferry__device_info *info = &m->infos[dst];
        for (int i = 0; i < info->n_maps; i++) {
            const ferry_device_map_entry *e = &info->maps[i];
            if (same(e->to, from) && !strcmp(e->worker, me)) {
                *to = e->from;
                return FERRY_OK;
            }
        }
    }
    if (from.type == FERRY_CPU) {
        *to = FERRY_DEVICE_CPU;
        return FERRY_OK;
    }
    char dev[32];
    ferry_device_format(from, dev, sizeof dev);
    if (reverse)
        return ferry__fail(FERRY_EINVAL, "Response device mapping is not available for %s for "
                           "device %s", m->names[dst], dev);
    return ferry__fail(FERRY_EINVAL, "TensorPipe RPC backend only supports CPU tensors by "
                       "default, please move your tensors to CPU before sending them over RPC, "
                       "or call `ferry_rpc_options_set_device_map` on `ferry_rpc_options` to "
                       "explicitly configure device mapping. Request device mapping is not "
                       "available for destination %s for device %s but received a tensor on "
                       "that device.", m->names[dst], dev);
}

void ferry__device_maps_free(ferry__device_maps *m)
{
    ferry__free(m->infos);
    m->infos = NULL;
    m->world_size = 0;
}

int ferry__agent_peer_device_count(ferry__agent *agent, int peer)
{
    const ferry__device_maps *m = &agent->device_maps;
    return m->infos && peer >= 0 && peer < m->world_size ? m->infos[peer].count : 0;
}

const char *ferry__agent_peer_device_backend(ferry__agent *agent, int peer)
{
    const ferry__device_maps *m = &agent->device_maps;
    if (!m->infos || peer < 0 || peer >= m->world_size || !m->infos[peer].backend[0])
        return "none";
    return m->infos[peer].backend;
}
