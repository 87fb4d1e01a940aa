// The agents table with many agents, in a real browser: every row is there to scroll to, sorting
// and filtering reach all of them, and the page holds only the rows in view.
//
//   node tests/browser/many_agents_test.mjs <base url> <token> <count>
import assert from 'node:assert/strict';
import { launch } from './launch.mjs';

const [base, token, count] = process.argv.slice(2);
const total = Number(count);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(`${base}/#token=${token}`);
  await page.waitForSelector('#app:not([hidden])');
  await page.goto(`${base}/#/agents`);
  await page.waitForFunction((n) => document.querySelector('#agents-count').textContent.startsWith(`${n} of ${n}`), total,
    { timeout: 30000 });
  const rows = await page.$$eval('#agents-body .row', (all) => all.length);
  assert.ok(rows < 100, `only the rows in view are in the page, not ${rows}`);
  // Sort by id, descending: the last agent comes first; scroll to the end: the first is there.
  await page.click('#agents-head span[data-key="id"]');
  const sorted = Date.now();
  await page.waitForFunction(() => document.querySelector('#agents-head span[data-key="id"]').textContent.includes('▾'));
  const sortMs = Date.now() - sorted;
  const firstShown = await page.$eval('#agents-body .row:not([hidden]) span:nth-child(2)', (s) => Number(s.textContent));
  await page.$eval('#agents-body', (body) => { body.scrollTop = body.scrollHeight; });
  await page.waitForTimeout(100);
  const shownIds = await page.$$eval('#agents-body .row:not([hidden]) span:nth-child(2)', (all) => all.map((s) => Number(s.textContent)));
  assert.ok(shownIds.includes(Math.min(...shownIds)) && Math.min(...shownIds) < firstShown, 'the other end of the list is reachable');
  await page.fill('#filter', 'many-7777');
  await page.waitForFunction(() => document.querySelector('#agents-count').textContent.startsWith('1 of'));
  const filtered = await page.$eval('#agents-count', (c) => c.textContent);
  assert.deepEqual(errors, [], 'no script errors on the page');
  console.log(`ok - ${total} agents: ${rows} rows in the page, sorted in ${sortMs} ms, filtered to "${filtered}"`);
} finally {
  await browser.close();
}
