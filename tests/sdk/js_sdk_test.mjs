// Unit tests of the JavaScript SDK's own logic, on Node. The `agora:agent/*` interfaces only
// exist inside a component, so `js_sdk_loader.mjs` resolves them to empty modules: nothing here
// calls the host.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HostError, Reject, agent, host, text } from '../../guest-sdk/js/agora.js';

test('a thrown error variant becomes a HostError with its case and payload', () => {
  const thrown = (payload) => () => {
    const error = new Error('host call failed');
    error.payload = payload;
    throw error;
  };
  assert.throws(() => host(thrown({ tag: 'not-found' })), (e) => e instanceof HostError && e.code === 'not-found');
  assert.throws(
    () => host(thrown({ tag: 'too-large', val: 1024n })),
    (e) => e instanceof HostError && e.code === 'too-large' && e.detail === 1024n,
  );
  assert.throws(() => host(() => { throw new TypeError('own bug'); }), TypeError, 'other errors pass unchanged');
  assert.equal(host((a, b) => a + b, 2, 3), 5);
});

test('replies are bytes, Reject refuses one message and any other error is fatal', () => {
  const world = agent({
    init(config) { this.greeting = config.greeting; },
    handle(message) {
      const said = text(message.payload);
      if (said === 'no') throw new Reject('not that');
      if (said === 'boom') throw new RangeError('out');
      return `${this.greeting} ${said}`;
    },
  });
  world.init([['greeting', 'hi']]);
  const message = (said) => ({ payload: new TextEncoder().encode(said) });
  assert.equal(text(world.handle(message('there'))), 'hi there');
  assert.throws(() => world.handle(message('no')), (e) => e.fatal === false && e.message === 'not that');
  assert.throws(() => world.handle(message('boom')), (e) => e.fatal === true && e.message === 'RangeError: out');
});

test('a failing init names the error', () => {
  const world = agent({ init() { throw new Error('no peers'); } });
  assert.throws(() => world.init([]), (e) => e === 'init: no peers');
});

test('state: the snapshot is bytes, restore rebuilds the agent instead of init, and failures name themselves', () => {
  const world = agent({
    count: 0,
    init() { this.count = 100; },
    snapshot() { return JSON.stringify({ count: this.count }); },
    restore(config, state, fromVersion) {
      if (fromVersion === 'bad') throw new Error('unknown format');
      this.count = JSON.parse(text(state)).count + Number(config.bonus || 0);
    },
    handle() { this.count += 1; return String(this.count); },
  });
  world.state.restore([['bonus', '2']], new TextEncoder().encode('{"count":5}'), 'sha256:0123456789ab');
  assert.equal(text(world.handle({ payload: new Uint8Array() })), '8', 'restored, not initialised');
  assert.deepEqual(JSON.parse(text(world.state.snapshot())), { count: 8 });
  assert.throws(() => world.state.restore([], new Uint8Array(), 'bad'), (e) => e === 'restore: unknown format');
  const stateless = agent({ handle() {} });
  assert.throws(() => stateless.state.snapshot(), (e) => String(e).startsWith('snapshot: this agent keeps no state'));
});

test('handleBatch hands each item to handle or notify in order and reports each outcome before the next', () => {
  const seen = [];
  const world = agent({
    handle(message) {
      const said = text(message.payload);
      seen.push(said);
      if (said === 'no') throw new Reject('not that');
      if (said === 'die') throw new Error('dead');
      return said.toUpperCase();
    },
    notify(notice) { seen.push(notice.tag); },
  });
  const message = (said) => ({ tag: 'message', val: { payload: new TextEncoder().encode(said) } });
  const queue = [message('no'), { tag: 'notice', val: { tag: 'down', val: {} } }, message('b'), message('die'), message('c')];
  const reported = [];
  globalThis.agoraBatchNext = (done) => {
    reported.push(done.tag === 'ok' ? (done.val === undefined ? 'none' : text(done.val)) : `${done.tag}:${done.val.fatal}`);
    // Like the host: nothing after a fatal error.
    return done.tag === 'err' && done.val.fatal ? undefined : queue.shift();
  };
  world.handleBatch(message('a'));
  assert.deepEqual(seen, ['a', 'no', 'down', 'b', 'die']);
  assert.deepEqual(reported, ['A', 'err:false', 'none', 'B', 'err:true']);
  assert.equal(queue.length, 1, 'what follows a fatal error is not taken');
});
