/* {{name}}: answers each message with a greeting (the config's `greeting`, "hello" by default). */
#include <stdio.h>

#include "agora.h"

static char greeting[64] = "hello";

bool exports_agent_init(agent_list_tuple2_string_string_t *config, agent_string_t *err) {
  (void)err;
  const agent_string_t *configured = agora_config(config, "greeting");
  if (configured) snprintf(greeting, sizeof greeting, "%.*s", (int)configured->len, (const char *)configured->ptr);
  agent_list_tuple2_string_string_free(config);
  return true;
}

bool exports_agent_handle(agent_envelope_t *message, agent_option_list_u8_t *ret, agent_handle_error_t *err) {
  (void)err;
  char line[300];
  snprintf(line, sizeof line, "greeting %.*s", (int)message->payload.len, (const char *)message->payload.ptr);
  agora_log(line);
  /* A reply answers a `call`. */
  char answer[400];
  snprintf(answer, sizeof answer, "%s, %.*s!", greeting, (int)message->payload.len, (const char *)message->payload.ptr);
  agent_envelope_free(message);
  return agora_reply(ret, answer);
}

bool exports_agent_notify(agent_notice_t *notice, agent_handle_error_t *err) {
  (void)err;
  agent_notice_free(notice);
  return true;
}

void exports_agent_terminate(agent_string_t *reason) { agent_string_free(reason); }
