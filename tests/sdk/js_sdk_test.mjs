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
