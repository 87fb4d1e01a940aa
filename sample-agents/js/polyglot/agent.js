// The polyglot agent in JavaScript: the same text protocol as its Rust, Python and C siblings
// (see sample-agents/python/polyglot/app.py): ping, ask:<agent>:<text>, missing, count,
// config:<path>, alloc:<bytes>, crash, exit:<reason>, monitor:<id>, notices.
import {
  agent, call, exit, host, log, text, HostError, Reject, config, registry, supervision, telemetry,
} from '../../../guest-sdk/js/agora.js';

let calls = 0;
let lastNotice = 'none';

export const { init, handle, handleBatch, notify, terminate } = agent({
  init(settings) {
    host(registry.addCapability, 'polyglot');
    log(`javascript agent up (${settings.motto ?? 'no motto'})`);
  },

  // A host notice, typed: `{ tag, val }`.
  notify(notice) {
    if (notice.tag === 'down') lastNotice = `javascript saw ${notice.val.agent} down: ${notice.val.reason}`;
  },

  handle(message) {
    const [command, first, rest] = splitOnce(text(message.payload));
    switch (command) {
      case 'ping':
        return 'pong from javascript';
      case 'ask':
        try {
          return `javascript heard: ${text(call(first, rest ?? '', 5000))}`;
        } catch (error) {
          if (error instanceof HostError) return `error ${error.code}`;
          throw error;
        }
      case 'missing':
        try {
          call('nobody-by-this-name', 'hello', 1000);
          return 'unexpected answer';
        } catch (error) {
          if (error instanceof HostError) return `error ${error.code}`;
          throw error;
        }
      case 'count':
        calls += 1;
        host(telemetry.counterAdd, 'polyglot_calls', 1n);
        return String(calls);
      case 'config': {
        const value = host(config.get, first);
        return value === undefined ? 'none' : value;
      }
      case 'alloc': {
        const block = new Uint8Array(Number(first));
        block.fill(1);
        return `allocated ${block.length}`;
      }
      case 'crash':
        throw new Error('crashed on request');
      case 'exit':
        try {
          exit(first);
        } catch (error) {
          if (error instanceof HostError) return `error ${error.code}`;
          throw error;
        }
        return `exiting ${first}`;
      case 'monitor':
        host(supervision.monitor, BigInt(first));
        return `monitoring ${first}`;
      case 'notices':
        return lastNotice;
      default:
        throw new Reject(`unknown command '${command}'`);
    }
  },
});

// `a:b:c...` -> [a, b, the rest].
function splitOnce(line) {
  const [command, first, ...rest] = line.split(':');
  return [command, first, rest.length ? rest.join(':') : undefined];
}
