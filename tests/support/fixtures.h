/* SPDX-License-Identifier: MIT */
/* fixtures.h: frames the in-process tests and fuzz targets build alike (header only, so
 * that the fuzz targets, which link no test support library, share them too). */
#ifndef ING_TEST_FIXTURES_H
#define ING_TEST_FIXTURES_H

#include <string.h>
#include <sys/types.h>

#include "inginious/mp.h"
#include "inginious/proto.h"

/* fx_new_job encodes the ClientNewJob frame of job id on docker/NAME (launcher "L", empty
 * maps) at out (cap bytes): its length, or a negative value when it does not fit. */
static inline ssize_t
fx_new_job(uint8_t *out, size_t cap, const char *id, const char *name)
{
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = ING_CLIENT_NEW_JOB;
    m.u.new_job.launcher = (struct ing_view){"L", 1};
    struct ing_job_spec *sp = &m.u.new_job.job;
    sp->job_id = (struct ing_view){id, (uint32_t)strlen(id)};
    sp->environment_type = (struct ing_view){"docker", 6};
    sp->environment = (struct ing_view){name, (uint32_t)strlen(name)};
    sp->task_problems = sp->inputdata = sp->environment_parameters = (struct ing_view){"\x80", 1};
    return ing_msg_encode(&m, out, cap);
}

/* fx_env_entry writes one environment's description, {"id": "i1", "created": 1}, with w. */
static inline void
fx_env_entry(struct ing_mp_writer *w)
{
    ing_mp_put_map(w, 2);
    ing_mp_put_cstr(w, "id");
    ing_mp_put_cstr(w, "i1");
    ing_mp_put_cstr(w, "created");
    ing_mp_put_int(w, 1);
}

/* fx_envs writes an agent's environments map {"docker": {NAME: {"id": "i1", "created": 1}}}
 * with w (its error, if any, in w->err). */
static inline void
fx_envs(struct ing_mp_writer *w, const char *name)
{
    ing_mp_put_map(w, 1);
    ing_mp_put_cstr(w, "docker");
    ing_mp_put_map(w, 1);
    ing_mp_put_cstr(w, name);
    fx_env_entry(w);
}

/* fx_result encodes a successful result of job id (type ING_AGENT_JOB_DONE or
 * ING_BACKEND_JOB_DONE: text "ok", empty maps and state) at out (cap bytes): its length, or
 * a negative value when it does not fit. */
static inline ssize_t
fx_result(uint8_t *out, size_t cap, uint8_t type, const char *id)
{
    struct ing_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    struct ing_job_result *r = &m.u.result;
    r->job_id = (struct ing_view){id, (uint32_t)strlen(id)};
    r->result_kind = (struct ing_view){"success", 7};
    r->result_text = (struct ing_view){"ok", 2};
    r->problems = r->tests = r->custom = (struct ing_view){"\x80", 1};
    r->state = (struct ing_view){"", 0};
    return ing_msg_encode(&m, out, cap);
}

#endif
