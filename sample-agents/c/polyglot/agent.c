/* The polyglot agent in C: the same text protocol as its Rust, Python and JavaScript siblings
 * (see sample-agents/python/polyglot/app.py): ping, ask:<agent>:<text>, missing, count,
 * config:<path>, alloc:<bytes>, crash, exit:<reason>, monitor:<id>, notices. */
#include <stdio.h>

#include "agora.h"

static unsigned long long calls;
/* The last host notice seen, as text. */
static char last_notice[300] = "none";
/* Keeps an allocation observable, so that the compiler cannot elide it. */
static void *volatile kept;

bool exports_agent_init(agent_list_tuple2_string_string_t *config, agent_string_t *err) {
  agent_string_t capability;
  agora_agent_registry_error_t error;
  agent_string_set(&capability, "polyglot");
  if (!agora_agent_registry_add_capability(&capability, &error)) {
    agent_string_dup(err, agora_error_code(&error));
    agent_list_tuple2_string_string_free(config);
    return false;
  }
  const agent_string_t *motto = agora_config(config, "motto");
  char line[160];
  snprintf(line, sizeof line, "c agent up (%.*s)", motto ? (int)motto->len : 8,
           motto ? (const char *)motto->ptr : "no motto");
  agora_log(line);
  agent_list_tuple2_string_string_free(config);
  return true;
}

/* The field after the `index`-th colon (`rest`: everything after it), NUL-terminated in `out`. */
static const char *field(const char *line, int index, bool rest, char *out, size_t size) {
  const char *at = line;
  for (int i = 0; i < index && at; i++) {
    at = strchr(at, ':');
    if (at) at++;
  }
  if (!at) return NULL;
  size_t n = rest ? strlen(at) : strcspn(at, ":");
  if (n >= size) n = size - 1;
  memcpy(out, at, n);
  out[n] = 0;
  return out;
}

bool exports_agent_handle(agent_envelope_t *message, agent_option_list_u8_t *ret, agent_handle_error_t *err) {
  char line[512], first[256], rest[256], answer[600];
  size_t n = message->payload.len < sizeof line - 1 ? message->payload.len : sizeof line - 1;
  memcpy(line, message->payload.ptr, n);
  line[n] = 0;
  agent_envelope_free(message);
  ret->is_some = false;
  char command[32];
  field(line, 0, false, command, sizeof command);

  if (strcmp(command, "ping") == 0) return agora_reply(ret, "pong from c");
  if (strcmp(command, "ask") == 0 || strcmp(command, "missing") == 0) {
    bool ask = command[0] == 'a';
    const char *to = ask ? field(line, 1, false, first, sizeof first) : "nobody-by-this-name";
    const char *text = ask ? field(line, 2, true, rest, sizeof rest) : "hello";
    if (!to) return agora_refuse(err, false, "ask needs an agent");
    if (!text) text = "";
    agent_list_u8_t reply;
    agora_agent_types_error_t error;
    if (!agora_call(to, (const uint8_t *)text, strlen(text), ask ? 5000 : 1000, &reply, &error)) {
      snprintf(answer, sizeof answer, "error %s", agora_error_code(&error));
      agora_agent_types_error_free(&error);
      return agora_reply(ret, answer);
    }
    if (ask) {
      snprintf(answer, sizeof answer, "c heard: %.*s", (int)reply.len, (const char *)reply.ptr);
    } else {
      snprintf(answer, sizeof answer, "unexpected answer");
    }
    agent_list_u8_free(&reply);
    return agora_reply(ret, answer);
  }
  if (strcmp(command, "count") == 0) {
    agent_string_t name;
    agora_agent_telemetry_error_t error;
    agent_string_set(&name, "polyglot_calls");
    if (!agora_agent_telemetry_counter_add(&name, 1, &error)) {
      snprintf(answer, sizeof answer, "error %s", agora_error_code(&error));
      return agora_reply(ret, answer);
    }
    snprintf(answer, sizeof answer, "%llu", ++calls);
    return agora_reply(ret, answer);
  }
  if (strcmp(command, "config") == 0) {
    agent_string_t path;
    agent_option_string_t value;
    agora_agent_config_error_t error;
    if (!field(line, 1, true, first, sizeof first)) return agora_refuse(err, false, "config needs a path");
    agent_string_set(&path, first);
    if (!agora_agent_config_get(&path, &value, &error)) {
      snprintf(answer, sizeof answer, "error %s", agora_error_code(&error));
      return agora_reply(ret, answer);
    }
    if (!value.is_some) return agora_reply(ret, "none");
    snprintf(answer, sizeof answer, "%.*s", (int)value.val.len, (const char *)value.val.ptr);
    agent_option_string_free(&value);
    return agora_reply(ret, answer);
  }
  if (strcmp(command, "alloc") == 0) {
    long size = field(line, 1, false, first, sizeof first) ? strtol(first, NULL, 10) : 0;
    char *block = malloc((size_t)size);
    /* Out of memory under the cap: trap, as a Rust agent does. */
    if (!block) abort();
    memset(block, 1, (size_t)size);
    kept = block;
    free(kept);
    snprintf(answer, sizeof answer, "allocated %ld", size);
    return agora_reply(ret, answer);
  }
  if (strcmp(command, "crash") == 0) abort();
  if (strcmp(command, "exit") == 0) {
    if (!field(line, 1, true, first, sizeof first) || !agora_exit(first)) return agora_reply(ret, "error invalid");
    snprintf(answer, sizeof answer, "exiting %s", first);
    return agora_reply(ret, answer);
  }
  if (strcmp(command, "monitor") == 0) {
    uint64_t reference;
    agora_agent_supervision_error_t error;
    unsigned long long target = field(line, 1, false, first, sizeof first) ? strtoull(first, NULL, 10) : 0;
    if (!agora_agent_supervision_monitor(target, &reference, &error)) {
      snprintf(answer, sizeof answer, "error %s", agora_error_code(&error));
      return agora_reply(ret, answer);
    }
    snprintf(answer, sizeof answer, "monitoring %llu", target);
    return agora_reply(ret, answer);
  }
  if (strcmp(command, "notices") == 0) return agora_reply(ret, last_notice);
  snprintf(answer, sizeof answer, "unknown command '%s'", command);
  return agora_refuse(err, false, answer);
}

/* A host notice, typed: a tagged union. */
bool exports_agent_notify(agent_notice_t *notice, agent_handle_error_t *err) {
  (void)err;
  if (notice->tag == AGORA_AGENT_TYPES_NOTICE_DOWN) {
    const agora_agent_types_down_t *down = &notice->val.down;
    snprintf(last_notice, sizeof last_notice, "c saw %llu down: %.*s", (unsigned long long)down->agent,
             (int)down->reason.len, (const char *)down->reason.ptr);
  }
  agent_notice_free(notice);
  return true;
}

void exports_agent_terminate(agent_string_t *reason) { agent_string_free(reason); }
