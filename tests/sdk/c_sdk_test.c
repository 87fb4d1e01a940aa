/* Unit tests of the C SDK's helpers, compiled natively against the header wit-bindgen generates
 * for the agent world. Only helpers that call no host function are used, and `handle-batch`,
 * driven by stand-ins for the agent's callbacks and for the host's `batch.next`. */
#include <stdio.h>

#include "agora.h"

static int failures = 0;

static void expect(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "FAILED: %s\n", what);
    failures++;
  }
}

/* The agent's callbacks: a message "no" is refused, "die" is a fatal error, any other is
 * answered with itself; a notice is accepted. Each records what it got, in order. */
static char seen[16];
static int nseen = 0;

bool exports_agent_handle(agent_envelope_t *message, agent_option_list_u8_t *ret, agent_handle_error_t *err) {
  const char *text = (const char *)message->payload.ptr;
  seen[nseen++] = text[0];
  if (message->payload.len == 2 && !memcmp(text, "no", 2)) {
    err->fatal = false;
    err->message.ptr = (uint8_t *)strdup("refused");
    err->message.len = 7;
    return false;
  }
  if (message->payload.len == 3 && !memcmp(text, "die", 3)) {
    err->fatal = true;
    err->message.ptr = (uint8_t *)strdup("fatal");
    err->message.len = 5;
    return false;
  }
  ret->is_some = true;
  ret->val.ptr = malloc(message->payload.len);
  memcpy(ret->val.ptr, text, message->payload.len);
  ret->val.len = message->payload.len;
  return true;
}

bool exports_agent_notify(agent_notice_t *notice, agent_handle_error_t *err) {
  (void)notice;
  (void)err;
  seen[nseen++] = 'N';
  return true;
}

/* The host's side: hands out `queue` in order, records each outcome as reported. */
static agora_agent_batch_item_t queue[8];
static int queued = 0, taken = 0;
static char outcomes[16][8];
static int reported = 0;

bool agora_agent_batch_next(agora_agent_batch_outcome_t *done, agora_agent_batch_item_t *ret) {
  char *outcome = outcomes[reported++];
  if (done->is_err) {
    snprintf(outcome, 8, "%s", done->val.err.fatal ? "fatal" : "err");
  } else if (done->val.ok.is_some) {
    snprintf(outcome, 8, "=%.*s", (int)done->val.ok.val.len, (const char *)done->val.ok.val.ptr);
  } else {
    snprintf(outcome, 8, "none");
  }
  /* Like the host, nothing after a fatal error. */
  if (taken == queued || (done->is_err && done->val.err.fatal)) return false;
  *ret = queue[taken++];
  return true;
}

static agora_agent_batch_item_t message_item(const char *text) {
  agora_agent_batch_item_t item;
  memset(&item, 0, sizeof item);
  item.tag = AGORA_AGENT_BATCH_ITEM_MESSAGE;
  item.val.message.payload.ptr = (uint8_t *)text;
  item.val.message.payload.len = strlen(text);
  return item;
}

static void test_handle_batch(void) {
  agora_agent_batch_item_t notice;
  memset(&notice, 0, sizeof notice);
  notice.tag = AGORA_AGENT_BATCH_ITEM_NOTICE;
  queue[queued++] = message_item("no");
  queue[queued++] = notice;
  queue[queued++] = message_item("b");
  agora_agent_batch_item_t first = message_item("a");
  exports_agent_handle_batch(&first);
  expect(nseen == 4 && !memcmp(seen, "anNb", 4), "each item went to its callback, in order");
  expect(reported == 4, "each outcome was reported once");
  expect(!strcmp(outcomes[0], "=a") && !strcmp(outcomes[1], "err") && !strcmp(outcomes[2], "none") &&
             !strcmp(outcomes[3], "=b"),
         "a reply, a refusal, a notice's none, a reply");

  /* A fatal error ends the batch: what follows stays with the host. */
  nseen = reported = queued = taken = 0;
  queue[queued++] = message_item("c");
  agora_agent_batch_item_t dying = message_item("die");
  exports_agent_handle_batch(&dying);
  expect(nseen == 1 && reported == 1 && !strcmp(outcomes[0], "fatal") && taken == 0,
         "a fatal error is reported and nothing more is taken");
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

  test_handle_batch();

  if (failures == 0) puts("c sdk: all passed");
  return failures != 0;
}
