// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Run by tests/dashboard.rs against a host it started:
//
//   node tests/browser/dashboard_test.mjs <base url> <token> <screenshot dir> <agent,agent,...>
//
// Prints one line per check, and exits non-zero at the first that fails.
import assert from 'node:assert/strict';
import { launch } from './launch.mjs';

const [base, token, shots, expected] = process.argv.slice(2);
const agents = expected.split(',');
const api = async (method, path, body) => {
  const response = await fetch(`${base}${path}`, { method, body, headers: { Authorization: `Bearer ${token}` } });
  return { status: response.status, body: await response.json().catch(() => null) };
};
const step = (text) => console.log(`ok - ${text}`);

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));

  // Without the token: the page asks for it, and a wrong one is refused.
  await page.goto(`${base}/`);
  await page.waitForSelector('#login:not([hidden])');
  assert.equal(await page.isHidden('#app'), true, 'nothing is shown without a token');
  await page.fill('#token', 'not-the-token');
  await page.click('#login-form button');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent.includes('refused'));
  step('without the token the page asks for it, and refuses a wrong one');

  // With the token in the link: the overview, live.
  await page.goto(`${base}/#token=${token}`);
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForFunction(() => document.querySelector('#connection').textContent === 'live');
  assert.equal(page.url().includes(token), false, 'the token leaves the address bar');
  await page.waitForFunction(() => document.querySelector('#cards').textContent.includes('version'));
  // Let the charts draw a few ticks of traffic.
  for (let i = 0; i < 50; i++) await api('POST', '/v1/agents/counter/send', 'inc');
  await page.waitForTimeout(3500);
  await page.screenshot({ path: `${shots}/dashboard-overview.png` });
  step('the token from the link opens the live overview');

  // The agents table shows every agent of the manifest.
  await page.goto(`${base}/#/agents`);
  for (const name of agents) {
    await page.waitForFunction((n) => [...document.querySelectorAll('#agents-body .row:not([hidden]) span:first-child')]
      .some((s) => s.textContent === n), name);
  }
  await page.screenshot({ path: `${shots}/dashboard-agents.png` });
  await page.fill('#filter', 'crash');
  await page.waitForFunction(() => document.querySelector('#agents-count').textContent.startsWith('1 of'));
  await page.fill('#filter', '');
  step(`the table shows ${agents.join(', ')}, and filters`);

  // A crash shows up in the event stream and the tree within a second.
  await page.goto(`${base}/#/events`);
  const before = (await api('GET', '/v1/tree')).body.supervisors.root.find((c) => c.name === 'crasher').restarts;
  const crashed = Date.now();
  const answer = await api('POST', '/v1/agents/crasher/call?timeout_ms=5000', 'hog');
  assert.notEqual(answer.status, 200, 'the crasher crashed instead of answering');
  await page.waitForFunction(() => [...document.querySelectorAll('#events li')]
    .some((li) => li.textContent.includes('agent_exited') && li.textContent.includes('crasher')), null, { timeout: 1000 });
  const seen = Date.now() - crashed;
  await page.screenshot({ path: `${shots}/dashboard-events.png` });
  await page.goto(`${base}/#/tree`);
  await page.waitForFunction((n) => {
    const leaf = [...document.querySelectorAll('#tree .leaf')].find((l) => l.textContent.includes('crasher'));
    return leaf && leaf.textContent.includes(`${n} restarts`);
  }, before + 1, { timeout: 1000 });
  await page.screenshot({ path: `${shots}/dashboard-tree.png` });
  step(`a crash reached the event stream in ${seen} ms and the tree shows the restart`);

  // One agent's page, and a stop from it.
  await page.goto(`${base}/#/agent/counter`);
  await page.waitForFunction(() => document.querySelector('#agent-cards').textContent.includes('counter@'));
  await page.fill('#payload', 'get');
  await page.click('button[data-action="call"]');
  await page.waitForFunction(() => document.querySelector('#action-result').textContent.startsWith('reply: '));
  await page.screenshot({ path: `${shots}/dashboard-agent.png` });
  await page.click('button[data-action="stop"]');
  await page.waitForFunction(() => document.querySelector('#action-result').textContent === 'stop: done');
  const tree = (await api('GET', '/v1/tree')).body;
  assert.equal(tree.supervisors.root.find((c) => c.name === 'counter').state, 'terminated');
  assert.equal((await api('GET', '/v1/agents/counter')).status, 404, 'the counter is stopped');
  step('a call and a stop from the agent page went through the API');

  assert.deepEqual(errors, [], 'no script errors on the page');
} finally {
  await browser.close();
}
