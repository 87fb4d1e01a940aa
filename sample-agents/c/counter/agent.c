/* A counter in C that carries its value across upgrades of its code: the Rust counter's commands
 * (inc, add <n>, set <n>, get) and state format ({"value":3,"held":null}), so that either can
 * take over from the other; `version` replies `c`. Built for the `stateful-agent` world with
 * `wit-bindgen c --world stateful-agent --rename-world agent`, so that agora.h applies as is. */
#include <stdio.h>

#include "agora.h"

static long long value;

bool exports_agent_init(agent_list_tuple2_string_string_t *config, agent_string_t *err) {
  const agent_string_t *start = agora_config(config, "start");
  char text[32] = "0";
  if (start && start->len < sizeof text) {
    memcpy(text, start->ptr, start->len);
    text[start->len] = 0;
  }
  value = strtoll(text, NULL, 10);
  agent_list_tuple2_string_string_free(config);
  (void)err;
  return true;
}

bool exports_agent_handle(agent_envelope_t *message, agent_option_list_u8_t *ret, agent_handle_error_t *err) {
  char line[128];
  size_t n = message->payload.len < sizeof line - 1 ? message->payload.len : sizeof line - 1;
  memcpy(line, message->payload.ptr, n);
  line[n] = 0;
  agent_envelope_free(message);
  ret->is_some = false;
  char *argument = strchr(line, ' ');
  if (argument) *argument++ = 0;
  if (strcmp(line, "version") == 0) return agora_reply(ret, "c");
  if (strcmp(line, "inc") == 0) {
    value += 1;
  } else if ((strcmp(line, "add") == 0 || strcmp(line, "set") == 0) && argument) {
    char *end;
    long long number = strtoll(argument, &end, 10);
    if (*end || end == argument) return agora_refuse(err, false, "not a number");
    value = line[0] == 'a' ? value + number : number;
  } else if (strcmp(line, "get") != 0) {
    return agora_refuse(err, false, "unknown command");
  }
  char answer[32];
  snprintf(answer, sizeof answer, "%lld", value);
  return agora_reply(ret, answer);
}

bool exports_agent_notify(agent_notice_t *notice, agent_handle_error_t *err) {
  agent_notice_free(notice);
  (void)err;
  return true;
}

void exports_agent_terminate(agent_string_t *reason) { agent_string_free(reason); }

bool exports_agora_agent_state_snapshot(agent_list_u8_t *ret, agent_string_t *err) {
  char state[64];
  snprintf(state, sizeof state, "{\"value\":%lld,\"held\":null}", value);
  (void)err;
  agora_bytes(ret, state);
  return true;
}

bool exports_agora_agent_state_restore(agent_list_tuple2_string_string_t *config, agent_list_u8_t *state,
                                       agent_string_t *from_version, agent_string_t *err) {
  char text[256];
  size_t n = state->len < sizeof text - 1 ? state->len : sizeof text - 1;
  memcpy(text, state->ptr, n);
  text[n] = 0;
  agent_list_u8_free(state);
  agent_list_tuple2_string_string_free(config);
  agent_string_free(from_version);
  const char *at = strstr(text, "\"value\":");
  if (!at) {
    agent_string_dup(err, "no value in the state");
    return false;
  }
  value = strtoll(at + strlen("\"value\":"), NULL, 10);
  return true;
}
