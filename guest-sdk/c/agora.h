/* Agora agents in C: helpers over the bindings `wit-bindgen c` generates for the world
 * `agent` (agent.h), and the world's `handle-batch` export (several mailbox items in one entry,
 * each handed to the agent's `exports_agent_handle` or `exports_agent_notify`), defined below
 * in terms of them. Include this header in exactly one file. An agent defines the four exports:
 *
 *   bool exports_agent_init(agent_list_tuple2_string_string_t *config, agent_string_t *err);
 *   bool exports_agent_handle(agent_envelope_t *message, agent_option_list_u8_t *ret,
 *                             agent_handle_error_t *err);
 *   bool exports_agent_notify(agent_notice_t *notice, agent_handle_error_t *err);
 *   void exports_agent_terminate(agent_string_t *reason);
 *
 * and calls the host through the generated `agora_agent_<interface>_<function>` functions, which
 * return false and fill an error variant when they fail; `agora_error_code` names its case.
 * Generated functions take ownership of nothing: free what they return with the generated
 * `*_free` functions, as the helpers below do.
 *
 * Host notices arrive typed, in mailbox order, through `exports_agent_notify`: `notice->tag` is
 * one of `AGORA_AGENT_TYPES_NOTICE_DOWN`, `..._EXIT`, `..._CONFIG_CHANGED`, `..._EVENT`,
 * `..._LEADER_CHANGED`, `..._VOTE_REQUESTED`, `..._AUCTION`, `..._MARKET`, and
 * `notice->val.down` (and so on) is its record; free it with `agent_notice_free`.
 *
 * An agent that carries its state across upgrades of its code is built for the `stateful-agent`
 * world, with `wit-bindgen c wit --world stateful-agent --rename-world agent` (so that the names
 * above stay), and defines two more exports:
 *
 *   bool exports_agora_agent_state_snapshot(agent_list_u8_t *ret, agent_string_t *err);
 *   bool exports_agora_agent_state_restore(agent_list_tuple2_string_string_t *config,
 *       agent_list_u8_t *state, agent_string_t *from_version, agent_string_t *err);
 *
 * `restore` runs instead of `init`; returning false (with `err`) refuses the state or the
 * upgrade. `agora_bytes` fills a snapshot. See sample-agents/c/counter.
 */
#ifndef AGORA_H
#define AGORA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/* The WIT name of a host error's case: "not-found", "mailbox-full", ... */
static inline const char *agora_error_code(const agora_agent_types_error_t *error) {
  static const char *const codes[] = {
      "not-found", "mailbox-full", "timeout", "denied", "invalid",
      "too-large", "already-exists", "stopped", "failed", "unpaid",
  };
  return error->tag < sizeof codes / sizeof codes[0] ? codes[error->tag] : "unknown";
}

/* Log a line at level info. */
static inline void agora_log(const char *message) {
  agent_string_t text;
  agent_string_set(&text, message);
  agora_agent_logging_log(AGORA_AGENT_LOGGING_LEVEL_INFO, &text);
}

/* The value of `key` in the agent's config, or NULL (borrowed from `config`). */
static inline const agent_string_t *agora_config(const agent_list_tuple2_string_string_t *config, const char *key) {
  size_t n = strlen(key);
  for (size_t i = 0; i < config->len; i++) {
    if (config->ptr[i].f0.len == n && memcmp(config->ptr[i].f0.ptr, key, n) == 0) {
      return &config->ptr[i].f1;
    }
  }
  return NULL;
}

/* Call the agent registered as `to` with `len` bytes; false with `error` filled on failure. */
static inline bool agora_call(const char *to, const uint8_t *payload, size_t len, uint32_t timeout_ms,
                              agent_list_u8_t *reply, agora_agent_types_error_t *error) {
  agora_agent_messaging_address_t address;
  address.tag = AGORA_AGENT_TYPES_ADDRESS_NAME;
  agent_string_set(&address.val.name, to);
  agent_list_u8_t bytes = {(uint8_t *)payload, len};
  return agora_agent_messaging_call(&address, &bytes, timeout_ms, reply, error);
}

/* Answer the message being handled with `text` (copied). */
static inline bool agora_reply(agent_option_list_u8_t *ret, const char *text) {
  size_t n = strlen(text);
  ret->is_some = true;
  ret->val.ptr = malloc(n ? n : 1);
  if (!ret->val.ptr) abort();
  memcpy(ret->val.ptr, text, n);
  ret->val.len = n;
  return true;
}

/* Fill `list` with a copy of `text` (a snapshot, say). */
static inline void agora_bytes(agent_list_u8_t *list, const char *text) {
  size_t n = strlen(text);
  list->ptr = malloc(n ? n : 1);
  if (!list->ptr) abort();
  memcpy(list->ptr, text, n);
  list->len = n;
}

/* Refuse the message being handled (`fatal`: end the instance as well). */
static inline bool agora_refuse(agent_handle_error_t *err, bool fatal, const char *why) {
  err->fatal = fatal;
  agent_string_dup(&err->message, why);
  return false;
}

/* End this agent normally once the current callback returns (in `init`: OTP's `ignore`). */
static inline void agora_stop(void) { agora_agent_lifecycle_stop(); }

/* End this agent with a reason once the current callback returns, as `erlang:exit/1`: "normal",
 * "shutdown", or any other text, which is abnormal. False (an `invalid` error) for an empty,
 * over-long or reserved reason. */
static inline bool agora_exit(const char *reason) {
  agora_agent_lifecycle_exit_reason_t asked;
  if (strcmp(reason, "normal") == 0) {
    asked.tag = AGORA_AGENT_LIFECYCLE_EXIT_REASON_NORMAL;
  } else if (strcmp(reason, "shutdown") == 0) {
    asked.tag = AGORA_AGENT_LIFECYCLE_EXIT_REASON_SHUTDOWN;
  } else {
    asked.tag = AGORA_AGENT_LIFECYCLE_EXIT_REASON_CUSTOM;
    asked.val.custom.ptr = (uint8_t *)reason;
    asked.val.custom.len = strlen(reason);
  }
  agora_agent_lifecycle_error_t err;
  if (agora_agent_lifecycle_exit(&asked, &err)) return true;
  agora_agent_lifecycle_error_free(&err);
  return false;
}

/* The `handle-batch` export (wit/batch.wit): each item handled by the agent's own
 * `exports_agent_handle` or `exports_agent_notify` (which own the item, as when the host calls
 * them), its outcome reported through `batch.next`, which hands out the next item or none. The
 * outcome's reply or error text, malloc'd by the callback, is freed once reported. */
void exports_agent_handle_batch(agent_item_t *first) {
  agora_agent_batch_item_t item = *first;
  for (;;) {
    agora_agent_batch_outcome_t done;
    memset(&done, 0, sizeof done);
    if (item.tag == AGORA_AGENT_BATCH_ITEM_MESSAGE) {
      done.is_err = !exports_agent_handle(&item.val.message, &done.val.ok, &done.val.err);
    } else {
      done.is_err = !exports_agent_notify(&item.val.notice, &done.val.err);
    }
    agora_agent_batch_item_t next;
    bool more = agora_agent_batch_next(&done, &next);
    if (done.is_err) {
      free(done.val.err.message.ptr);
    } else if (done.val.ok.is_some) {
      free(done.val.ok.val.ptr);
    }
    if (!more) return;
    item = next;
  }
}

#endif
