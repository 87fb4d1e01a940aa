// Agora agents in JavaScript (built with componentize-js).
//
// An agent is an object with `init(config)`, `handle(message)` and optionally
// `terminate(reason)`; `agent(...)` turns it into the functions the world exports, which the
// module exports by name (`handleBatch` hands the agent several mailbox items in one entry,
// each to `handle` or `notify`; an agent built for agora:agent@0.3.2 must export it):
//
//   import { agent, call } from '../../../guest-sdk/js/agora.js';
//   export const { init, handle, handleBatch, notify, terminate } = agent({
//     handle(message) { return message.payload; },
//   });
//
// Every host interface is re-exported by name (`messaging`, `registry`, `ledger`, ...). A host
// call that fails throws a `HostError` whose `code` is the WIT error case ('not-found',
// 'mailbox-full', 'denied', ...) and whose `detail` carries its payload, if any; `host(fn,
// ...args)` makes any generated function throw that way. In `handle`, throw a `Reject` to refuse
// one message (a caller gets `failed(text)`); any other exception ends the instance, and its
// supervisor decides what next.
//
// Host notices arrive typed, in mailbox order, through `notify(notice)`: a variant `{ tag, val }`
// with tag 'down', 'exit', 'config-changed', 'event', 'leader-changed', 'vote-requested',
// 'auction' or 'market' and its record as `val` (ids are BigInts):
//
//   export const { init, handle, handleBatch, notify, terminate } = agent({
//     notify(notice) { if (notice.tag === 'down') log(`agent ${notice.val.agent} exited`); },
//   });
//
// An agent that carries its state across upgrades of its code (built with `--world-name
// stateful-agent`) gives `snapshot()` (bytes or a string) and `restore(config, state,
// fromVersion)` (instead of `init`: set the agent up from `state`, a Uint8Array), and exports
// `state` too:
//
//   export const { init, handle, handleBatch, notify, terminate, state } = agent({
//     count: 0,
//     snapshot() { return JSON.stringify({ count: this.count }); },
//     restore(config, state, fromVersion) { this.count = JSON.parse(text(state)).count; },
//     handle(message) { this.count += 1; return String(this.count); },
//   });

import * as messaging from 'agora:agent/messaging@0.3.2';
import * as registry from 'agora:agent/registry@0.3.2';
import * as logging from 'agora:agent/logging@0.3.2';
import * as lifecycle from 'agora:agent/lifecycle@0.3.2';
import * as supervision from 'agora:agent/supervision@0.3.2';
import * as config from 'agora:agent/config@0.3.2';
import * as events from 'agora:agent/events@0.3.2';
import * as telemetry from 'agora:agent/telemetry@0.3.2';
import * as rateLimits from 'agora:agent/rate-limits@0.3.2';
import * as outbound from 'agora:agent/outbound@0.3.2';
import * as locks from 'agora:agent/locks@0.3.2';
import * as barriers from 'agora:agent/barriers@0.3.2';
import * as election from 'agora:agent/election@0.3.2';
import * as consensus from 'agora:agent/consensus@0.3.2';
import * as ledger from 'agora:agent/ledger@0.3.2';
import * as auctions from 'agora:agent/auctions@0.3.2';
import * as market from 'agora:agent/market@0.3.2';
import * as pools from 'agora:agent/pools@0.3.2';
import * as batch from 'agora:agent/batch@0.3.2';

export {
  messaging, registry, logging, lifecycle, supervision, config, events, telemetry, rateLimits, outbound,
  locks, barriers, election, consensus, ledger, auctions, market, pools, batch,
};

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A host call failed: `code` is the WIT error case, `detail` its payload (if any). */
export class HostError extends Error {
  constructor(code, detail) {
    super(detail === undefined ? code : `${code}: ${typeof detail === 'object' ? JSON.stringify(detail) : detail}`);
    this.name = 'HostError';
    this.code = code;
    this.detail = detail;
  }
}

/** Thrown from `handle`: refuse this message only; the agent keeps running. */
export class Reject extends Error {
  constructor(message) {
    super(message);
    this.name = 'Reject';
  }
}

function hostError(error) {
  // Generated bindings throw the error variant as the payload: `{ tag, val }`.
  const variant = error && error.payload;
  if (variant && typeof variant.tag === 'string') {
    return new HostError(variant.tag, variant.val);
  }
  return error;
}

/** Call any generated host function; a failure throws `HostError`. */
export function host(fn, ...args) {
  try {
    return fn(...args);
  } catch (error) {
    throw hostError(error);
  }
}

function address(to) {
  return typeof to === 'bigint' || typeof to === 'number' ? { tag: 'id', val: BigInt(to) } : { tag: 'name', val: to };
}

function bytes(payload) {
  return typeof payload === 'string' ? encoder.encode(payload) : payload;
}

/** Enqueue a message for an agent, by name or id. */
export function send(to, payload) {
  host(messaging.send, address(to), bytes(payload));
}

/** Send and wait for the reply (bytes). */
export function call(to, payload, timeoutMs = 5000) {
  return host(messaging.call, address(to), bytes(payload), timeoutMs);
}

/** The id registered under `name`, or undefined. */
export function lookup(name) {
  try {
    return host(registry.lookup, name);
  } catch (error) {
    if (error instanceof HostError && error.code === 'not-found') return undefined;
    throw error;
  }
}

export function log(message, level = 'info') {
  logging.log(level, message);
}

/** End this agent normally once the current callback returns (in `init`: OTP's `ignore`). */
export function stop() {
  lifecycle.stop();
}

/**
 * End this agent with `reason` once the current callback returns, as `erlang:exit/1`: 'normal',
 * 'shutdown', or any other text, which is abnormal (a custom reason). Throws a `HostError`
 * ('invalid') for an empty, over-long or reserved reason.
 */
export function exit(reason = 'normal') {
  const asked = reason === 'normal' || reason === 'shutdown' ? { tag: reason } : { tag: 'custom', val: reason };
  host(lifecycle.exit, asked);
}

/** Decode a payload as UTF-8 text. */
export function text(payload) {
  return decoder.decode(payload);
}

/** The world's exports, driving `impl`. */
export function agent(impl) {
  const exports = {
    init(settings) {
      try {
        if (impl.init) impl.init(Object.fromEntries(settings));
      } catch (error) {
        throw `init: ${error && error.message ? error.message : error}`;
      }
    },
    handle(message) {
      let reply;
      try {
        reply = impl.handle ? impl.handle(message) : undefined;
      } catch (error) {
        const rejected = error instanceof Reject;
        throw { fatal: !rejected, message: rejected ? error.message : `${error && error.name}: ${error && error.message}` };
      }
      return reply === undefined || reply === null ? undefined : bytes(reply);
    },
    notify(notice) {
      try {
        if (impl.notify) impl.notify(notice);
      } catch (error) {
        const rejected = error instanceof Reject;
        throw { fatal: !rejected, message: rejected ? error.message : `${error && error.name}: ${error && error.message}` };
      }
    },
    terminate(reason) {
      if (impl.terminate) impl.terminate(reason);
    },
    // Several mailbox items in one entry (wit/batch.wit): each handled as `handle` or `notify`
    // would handle it, its outcome reported before the host hands out the next.
    handleBatch(first) {
      for (let item = first; item !== undefined; ) {
        let done;
        try {
          done = { tag: 'ok', val: item.tag === 'message' ? exports.handle(item.val) : exports.notify(item.val) };
        } catch (error) {
          done = { tag: 'err', val: error };
        }
        item = batch.next(done);
      }
    },
    // The `state` interface of the stateful-agent world (ignored by the agent world).
    state: {
      snapshot() {
        if (!impl.snapshot) throw 'snapshot: this agent keeps no state across upgrades';
        try {
          return bytes(impl.snapshot());
        } catch (error) {
          throw `snapshot: ${error && error.message ? error.message : error}`;
        }
      },
      restore(settings, state, fromVersion) {
        if (!impl.restore) throw 'restore: this agent keeps no state across upgrades';
        try {
          impl.restore(Object.fromEntries(settings), state, fromVersion);
        } catch (error) {
          throw `restore: ${error && error.message ? error.message : error}`;
        }
      },
    },
  };
  return exports;
}
