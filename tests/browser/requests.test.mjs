// Requesting GPUs end to end: a user files a request in the browser, an admin approves it in
// another browser, and the user's page shows the placement without reloading.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, signIn, startPortal, watchErrors } from './portal.mjs';

const ADMIN = { name: 'ops', password: 'operator password', admin: true };
const ADA = { name: 'ada', password: 'analytical engine', admin: false };
const BOB = { name: 'bob', password: 'difference engine', admin: false };

let portal;
let browser;

before(async () => {
  portal = await startPortal('', [ADMIN, ADA, BOB]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await portal?.stop();
});

async function requestsPage(account) {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  watchErrors(page, errors);
  await signIn(page, portal.url, account.name, account.password);
  await page.goto(`${portal.url}requests`);
  await page.waitForSelector('.requests-page[data-hydrated="true"]', { timeout: 30_000 });
  return { page, errors };
}

test('a request is filed, approved by an admin, and its placement appears without reloading', async () => {
  const { page: ada, errors } = await requestsPage(ADA);

  // A bad field is named next to the field, and nothing is filed.
  await ada.fill('input[name="form[gpu_count]"]', 'two');
  await ada.fill('input[name="form[reason]"]', 'rerun the passthrough study');
  await ada.click('#file-request');
  await ada.waitForSelector('.field-error[data-field="gpu_count"]');
  assert.match(await ada.locator('.field-error[data-field="gpu_count"]').innerText(), /not a whole number/);
  assert.equal(await ada.locator('tr.request').count(), 0);

  await ada.selectOption('select[name="form[gpu_model]"]', 'A100 PCIe 80GB');
  await ada.fill('input[name="form[gpu_count]"]', '2');
  await ada.click('#file-request');
  await ada.waitForSelector('#filed');
  const row = ada.locator('tr.request').first();
  await ada.waitForSelector('tr.request[data-state="pending"]');
  const id = await row.getAttribute('data-id');
  assert.equal(await ada.locator('th', { hasText: 'Decide' }).count(), 0, 'users cannot decide');

  const { page: bob } = await requestsPage(BOB);
  assert.equal(await bob.locator(`tr.request[data-id="${id}"]`).count(), 0, "bob does not see ada's request");

  const { page: ops } = await requestsPage(ADMIN);
  const pending = ops.locator(`tr.request[data-id="${id}"]`);
  await pending.locator('button.approve').click();
  await ops.waitForSelector(`tr.request[data-id="${id}"][data-state="placed"]`);

  // Ada's page was not reloaded: polling brings the new state.
  await ada.waitForSelector(`tr.request[data-id="${id}"][data-state="placed"]`, { timeout: 10_000 });
  assert.match(await ada.locator(`tr.request[data-id="${id}"] .placement`).innerText(), /simulated NUMA 1 · 0000:98:00\.0, 0000:b1:00\.0/);

  // The hosts page shows both A100s as claimed.
  await ops.goto(portal.url);
  await ops.waitForSelector('[data-hydrated="true"]');
  for (const address of ['0000:98:00.0', '0000:b1:00.0']) {
    assert.equal(await ops.locator(`tr.gpu[data-address="${address}"] .badge`).innerText(), 'claimed');
  }
  assert.deepEqual(errors, []);
});

test('an admin denies a request with a reason the user reads', async () => {
  const { page: bob } = await requestsPage(BOB);
  await bob.selectOption('select[name="form[gpu_model]"]', 'L40S');
  await bob.fill('input[name="form[reason]"]', 'inference tests');
  await bob.click('#file-request');
  await bob.waitForSelector('tr.request[data-state="pending"]');
  const id = await bob.locator('tr.request').first().getAttribute('data-id');

  const { page: ops } = await requestsPage(ADMIN);
  const row = ops.locator(`tr.request[data-id="${id}"]`);
  await row.locator('input[name="reason"]').fill('no budget this month');
  await row.locator('button.deny').click();
  await bob.waitForSelector(`tr.request[data-id="${id}"][data-state="denied"]`, { timeout: 10_000 });
  assert.match(await bob.locator(`tr.request[data-id="${id}"]`).innerText(), /no budget this month/);
});
