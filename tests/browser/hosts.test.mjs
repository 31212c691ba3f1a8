// The hosts page end to end: server-rendered, hydrated, filtered and refreshed in Chromium.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, signIn, startPortal, watchErrors } from './portal.mjs';

const ADMIN = { name: 'ops', password: 'operator password', admin: true };
const USER = { name: 'ada', password: 'analytical engine', admin: false };

let portal;
let browser;

before(async () => {
  portal = await startPortal(`
[[hosts]]
name = "simulated"
uri = "simulated"

[[hosts]]
name = "lab-offline"
uri = "test:///nonexistent/passage/lab.xml"
`, [ADMIN, USER]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (portal) {
    const { code } = await portal.stop();
    assert.equal(code, 0, `graceful shutdown exits 0:\n${portal.output()}`);
  }
});

async function openHydrated(account = ADMIN) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  watchErrors(page, errors);
  await signIn(page, portal.url, account.name, account.password);
  return { page, errors };
}

test('nothing is shown before signing in, and a wrong password is refused', async () => {
  const html = await (await fetch(portal.url)).text();
  assert.ok(!html.includes('0000:17:00.0'), 'no GPU is listed to strangers');
  assert.ok(html.includes('sign-in-prompt'));
  assert.equal((await fetch(`${portal.url}api/v1/gpus`)).status, 401);

  const page = await (await browser.newContext()).newPage();
  await page.goto(`${portal.url}login`);
  await page.fill('input[name="name"]', ADMIN.name);
  await page.fill('input[name="password"]', 'not the password');
  await page.click('#sign-in');
  await page.waitForSelector('#login-error');
  assert.match(await page.locator('#login-error').innerText(), /Wrong name or password/);
  await page.close();
});

test('the page is rendered on the server with every simulated GPU', async () => {
  const { page } = await openHydrated();
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'passage_session');
  assert.ok(session && session.httpOnly && session.sameSite === 'Strict', 'a strict, HttpOnly session cookie');
  const html = await (await fetch(portal.url, { headers: { cookie: `passage_session=${session.value}` } })).text();
  for (const address of ['0000:17:00.0', '0000:4e:00.0', '0000:98:00.0', '0000:e3:00.0']) {
    assert.ok(html.includes(address), `server-rendered HTML lists ${address}`);
  }
  assert.ok(html.includes('data-hydrated="false"'), 'the hydration marker starts false');
  await page.close();
});

test('hosts and GPUs are shown by host and NUMA node after hydration', async () => {
  const { page, errors } = await openHydrated();
  const simulated = page.locator('section.host[data-host="simulated"]');
  assert.equal(await simulated.getAttribute('data-state'), 'reachable');
  assert.equal(await simulated.locator('tr.gpu').count(), 8);
  assert.equal(await simulated.locator('.numa[data-numa="0"] tr.gpu').count(), 4);
  assert.equal(await simulated.locator('.numa[data-numa="1"] tr.gpu').count(), 4);
  const ada = simulated.locator('tr.gpu[data-address="0000:e3:00.0"]');
  assert.match(await ada.innerText(), /0000:e3:00\.1\s+AD102 High Definition Audio Controller/);
  const degraded = simulated.locator('tr.gpu[data-address="0000:4e:00.0"]');
  assert.match(await degraded.innerText(), /PCIe Gen4 x16 \(capable of PCIe Gen5 x16\)/);

  const offline = page.locator('section.host[data-host="lab-offline"]');
  assert.equal(await offline.getAttribute('data-state'), 'unreachable');
  assert.match(await offline.locator('.host-error').innerText(), /nonexistent\/passage\/lab\.xml/);
  assert.deepEqual(errors, []);
  await page.screenshot({ path: process.env.SCREENSHOT_DIR ? `${process.env.SCREENSHOT_DIR}/hosts.png` : '/dev/null', fullPage: true }).catch(() => {});
  await page.close();
});

test('the model filter narrows the GPUs in the browser', async () => {
  const { page, errors } = await openHydrated();
  await page.selectOption('#model-filter', 'A100 PCIe 80GB');
  await page.waitForFunction(() => document.querySelectorAll('tr.gpu').length === 2);
  const models = await page.locator('tr.gpu').evaluateAll((rows) => rows.map((r) => r.dataset.model));
  assert.deepEqual(models, ['A100 PCIe 80GB', 'A100 PCIe 80GB']);
  assert.match(await page.locator('#gpu-summary').innerText(), /2 of 8 GPUs shown/);
  await page.selectOption('#model-filter', '');
  await page.waitForFunction(() => document.querySelectorAll('tr.gpu').length === 8);
  assert.deepEqual(errors, []);
  await page.close();
});

test('refresh asks the hosts again and shows the new inventory time', async () => {
  const { page, errors } = await openHydrated();
  const stamp = page.locator('section.host[data-host="simulated"] .last-refresh');
  const before = await stamp.innerText();
  // Inventory times have a resolution of one second: refresh once the clock is past the shown one.
  const shown = Date.parse(before.replace(/^last inventory /, ''));
  assert.ok(!Number.isNaN(shown), `an inventory time in ${JSON.stringify(before)}`);
  await page.waitForFunction((at) => Date.now() >= at + 1000, shown, { timeout: 5_000, polling: 50 });
  await page.click('#refresh');
  await page.waitForFunction(
    (old) => document.querySelector('section.host[data-host="simulated"] .last-refresh')?.textContent !== old,
    before,
    { timeout: 15_000 },
  );
  assert.match(await stamp.innerText(), /^last inventory \d{4}-\d\d-\d\dT/);
  assert.equal(await page.locator('button#refresh').innerText(), 'Refresh');
  assert.equal(await page.locator('section.host[data-host="lab-offline"]').getAttribute('data-state'), 'unreachable');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a user who is not an admin sees the GPUs but neither libvirt URIs nor messages, cannot refresh, and can sign out', async () => {
  const { page, errors } = await openHydrated(USER);
  assert.equal(await page.locator('tr.gpu').count(), 8);
  assert.equal(await page.locator('#refresh').count(), 0, 'no refresh button');
  assert.match(await page.locator('#viewer').innerText(), /^ada$/);
  // Libvirt's URIs and words are for admins: a user sees the offline host's state alone.
  const offline = page.locator('section.host[data-host="lab-offline"]');
  assert.equal(await offline.getAttribute('data-state'), 'unreachable');
  assert.match(await offline.locator('.host-error').innerText(), /admins see why/);
  assert.equal(await page.locator('code.uri').count(), 0);
  assert.ok(!(await page.content()).includes('nonexistent'), 'no libvirt URI or message');
  await Promise.all([page.waitForURL((u) => u.pathname === '/login'), page.click('#sign-out')]);
  await page.goto(portal.url);
  await page.waitForSelector('#sign-in-prompt');
  assert.deepEqual(errors, []);
  await page.close();
});
