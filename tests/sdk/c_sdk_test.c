/* Unit tests of the C SDK's helpers, compiled natively against the header wit-bindgen generates
 * for the agent world. Only helpers that call no host function are used. */
#include <stdio.h>

#include "agora.h"

static int failures = 0;

static void expect(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "FAILED: %s\n", what);
    failures++;
  }
}

static const char *code_of(uint8_t tag) {
  agora_agent_types_error_t error = {.tag = tag};
  return agora_error_code(&error);
}

int main(void) {
  /* Each case's name, by the generated constants: the table must follow the WIT's order. */
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_NOT_FOUND), "not-found"), "not-found");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_MAILBOX_FULL), "mailbox-full"), "mailbox-full");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_TIMEOUT), "timeout"), "timeout");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_DENIED), "denied"), "denied");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_INVALID), "invalid"), "invalid");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_TOO_LARGE), "too-large"), "too-large");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_ALREADY_EXISTS), "already-exists"), "already-exists");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_STOPPED), "stopped"), "stopped");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_FAILED), "failed"), "failed");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_UNPAID), "unpaid"), "unpaid");
  expect(!strcmp(code_of(AGORA_AGENT_TYPES_ERROR_UNPAID + 1), "unknown"), "a case this SDK predates");

#define TEXT(s) ((agent_string_t){.ptr = (uint8_t *)(s), .len = sizeof(s) - 1})
  agent_tuple2_string_string_t pairs[2] = {{TEXT("peers"), TEXT("3")}, {TEXT("peer"), TEXT("x")}};
  agent_list_tuple2_string_string_t config = {.ptr = pairs, .len = 2};
  const agent_string_t *peers = agora_config(&config, "peers");
  expect(peers && peers->len == 1 && peers->ptr[0] == '3', "a key is found");
  const agent_string_t *peer = agora_config(&config, "peer");
  expect(peer && peer->ptr[0] == 'x', "a key is matched whole, not as a prefix");
  expect(agora_config(&config, "pee") == NULL, "nor as a shorter key");
  expect(agora_config(&config, "absent") == NULL, "a missing key is NULL");

  if (failures == 0) puts("c sdk: all passed");
  return failures != 0;
}
