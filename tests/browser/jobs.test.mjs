// Plugins run from the browser: an admin registers two native hosts and their agents start (on
// the simulated GPU backend); a user runs a shipped plugin with a parameter of their own,
// watches it finish, reads its figures (labelled simulated) and compares them with the same run
// on the other host; the study's suite is queued in one click and runs; admins upload plugins,
// and what is not a plugin is refused with the reason; a plugin author downloads a kit, and the
// Python and JavaScript examples run as jobs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { addNativeHost, launchBrowser, openAs, startPortal } from './portal.mjs';

const ADMIN = { name: 'ops', password: 'operator password', admin: true };
const ADA = { name: 'ada', password: 'analytical engine', admin: false };

const BIN = resolve(process.env.PASSAGE_BIN ?? '../../target/debug/passage');
const TEST_PLUGINS = join(dirname(BIN), '..', 'plugins', 'test');
const EXAMPLES = join(dirname(BIN), '..', 'plugins', 'examples');

let portal;
let browser;
const agents = [];
const scratch = mkdtempSync(join(tmpdir(), 'passage-agents-'));

before(async () => {
  portal = await startPortal('[agents]\nheartbeat_secs = 1\noffline_after_secs = 5\n', [ADMIN, ADA]);
  browser = await launchBrowser();
});

after(async () => {
  for (const agent of agents) agent.kill('SIGKILL');
  await browser?.close();
  await portal?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

function open(account, path, ready) {
  return openAs(browser, portal, account, path, ready);
}

/** Selects the option of `select` whose text contains `text`. */
async function pick(page, select, text) {
  const value = await page.locator(`${select} option`, { hasText: text }).first().getAttribute('value');
  await page.selectOption(select, value);
}

/** Registers a native host on the agents page and starts its agent (two GPUs). */
async function nativeHost(page, name) {
  await addNativeHost(page, portal.url, name, { scratch, agents, devices: 2 });
}

test('a plugin is run on a native host from the browser and compared with another', async () => {
  const { page: ops, errors: opsErrors } = await open(ADMIN, 'agents', '.agents-page');
  await nativeHost(ops, 'bench-01');
  await ops.reload();
  await ops.waitForSelector('.agents-page[data-hydrated="true"]');
  await nativeHost(ops, 'bench-02');
  assert.match(await ops.locator('tr.agent[data-name="bench-01"]').innerText(), /simulated/);

  const { page: ada, errors } = await open(ADA, 'plugins', '.plugins-page');
  assert.equal(await ada.locator('#plugin-file').count(), 0, 'only admins upload');
  await ada.click('tr.plugin[data-name="vector-add"] a');
  await ada.waitForSelector('.plugin-page[data-hydrated="true"] #run-plugin');
  await pick(ada, '#run-target', 'bench-01');
  await ada.fill('tr.param[data-name="elements"] input', 'lots');
  await ada.click('#run-plugin');
  assert.match(await ada.locator('#run-error').innerText(), /elements/);
  await ada.fill('tr.param[data-name="elements"] input', '4096');
  await Promise.all([ada.waitForURL(/\/jobs\/\d+$/), ada.click('#run-plugin')]);
  await ada.waitForSelector('#job-state.succeeded', { timeout: 30_000 });
  assert.match(await ada.locator('#simulated-banner').innerText(), /SIMULATED/);
  assert.match(await ada.locator('#job-verification').innerText(), /skipped/);
  assert.match(await ada.locator('.params-list').innerText(), /elements=4096/);
  assert.ok(await ada.locator('#job-metrics tr.metric').count() > 3);
  assert.match(await ada.locator('#job-time').innerText(), /real [\d.]+ s, user [\d.]+ s, sys [\d.]+ s/);
  const first = ada.url();

  // The same run on the other host, then both side by side.
  await ada.goto(`${portal.url}plugins`);
  await ada.click('tr.plugin[data-name="vector-add"] a');
  await ada.waitForSelector('.plugin-page[data-hydrated="true"] #run-plugin');
  await pick(ada, '#run-target', 'bench-02');
  await ada.fill('tr.param[data-name="elements"] input', '4096');
  await Promise.all([ada.waitForURL((u) => /\/jobs\/\d+$/.test(u.pathname) && u.href !== first), ada.click('#run-plugin')]);
  await ada.waitForSelector('#job-state.succeeded', { timeout: 30_000 });
  await ada.waitForSelector('#comparison .compare-row');
  const rows = await ada.locator('#comparison .compare-metric').first().locator('.compare-row').allInnerTexts();
  assert.equal(rows.length, 2, rows.join(' | '));
  assert.match(rows.join(' | '), /bench-01 \(simulated\)[\s\S]*bench-02 \(simulated\)|bench-02 \(simulated\)[\s\S]*bench-01 \(simulated\)/);
  assert.deepEqual(errors, []);
  assert.deepEqual(opsErrors, []);
});

test('a plugin across GPUs runs on both of a host and shows its matrices as heat maps', async () => {
  const { page, errors } = await open(ADA, 'plugins', '.plugins-page');
  assert.match(await page.locator('tr.plugin[data-name="p2p-bandwidth"]').innerText(), /all GPUs/);
  await page.click('tr.plugin[data-name="p2p-bandwidth"] a');
  await page.waitForSelector('.plugin-page[data-hydrated="true"] #run-plugin');
  await pick(page, '#run-target', 'bench-01');
  assert.match(await page.locator('#run-gpu').innerText(), /every GPU of the machine \(2\)/);
  await page.fill('tr.param[data-name="bytes"] input', '1Mi');
  await page.fill('tr.param[data-name="latency-repetitions"] input', '10');
  await Promise.all([page.waitForURL(/\/jobs\/\d+$/), page.click('#run-plugin')]);
  await page.waitForSelector('#job-state.succeeded', { timeout: 30_000 });
  assert.match(await page.locator('#job-target').innerText(), /GPU 0,1/);
  const maps = await page.locator('#matrices table.heatmap').evaluateAll((tables) => tables.map((t) => t.dataset.name));
  for (const name of ['unidirectional bandwidth, P2P off', 'unidirectional bandwidth, P2P on',
    'bidirectional bandwidth, P2P on', 'latency, P2P off', 'peer access']) {
    assert.ok(maps.includes(name), `${name} in ${maps}`);
  }
  const cells = page.locator('#matrices table.heatmap[data-name="latency, P2P on"] td.cell');
  assert.equal(await cells.count(), 4, 'a 2 × 2 matrix');
  assert.deepEqual(errors, []);
});

test("the study's suite is queued in one click and runs to the end", async () => {
  const { page, errors } = await open(ADA, 'plugins', '.plugins-page');
  await pick(page, '#suite-target', 'bench-01');
  await Promise.all([page.waitForURL(/\/jobs\?batch=study-/), page.click('#run-suite')]);
  await page.waitForSelector('.jobs-page[data-hydrated="true"] tr.job');
  const count = await page.locator('tr.job').count();
  assert.equal(count, 15);
  await page.waitForFunction(
    () => [...document.querySelectorAll('tr.job')].every((r) => r.dataset.state === 'succeeded'),
    null,
    { timeout: 120_000 },
  );
  const labels = await page.locator('tr.job td:nth-child(2)').allInnerTexts();
  for (const label of ['alignedTypes', 'asyncAPI', 'BlackScholes', 'clock', 'convolutionSeparable',
    'fastWalshTransform', 'matrixMul sizeable', 'bandwidthTest (pinned)', 'VecAdd 128']) {
    assert.ok(labels.some((l) => l.includes(label)), `${label} in ${labels}`);
  }
  assert.deepEqual(errors, []);
});

test('admins upload plugins; what is not a plugin is refused with the reason', async () => {
  const { page, errors } = await open(ADMIN, 'plugins', '.plugins-page');
  const garbage = join(scratch, 'garbage.wasm');
  writeFileSync(garbage, 'not WebAssembly at all');
  await page.setInputFiles('#plugin-file', garbage);
  await Promise.all([page.waitForURL(/\/plugins\?error=/), page.click('#upload-plugin')]);
  assert.match(await page.locator('#upload-error').innerText(), /not a WebAssembly component/);
  assert.match(page.url(), /error=not-a-plugin$/);
  // A crafted link cannot put words on the page: only known codes are shown.
  await page.goto(`${portal.url}plugins?error=Your%20account%20is%20locked`);
  await page.waitForSelector('.plugins-page[data-hydrated="true"]');
  assert.equal(await page.locator('#upload-error').count(), 0);

  await page.setInputFiles('#plugin-file', {
    name: 'misbehave.wasm',
    mimeType: 'application/wasm',
    buffer: readFileSync(join(TEST_PLUGINS, 'misbehave.wasm')),
  });
  await Promise.all([page.waitForURL(/\/plugins\/\d+$/), page.click('#upload-plugin')]);
  await page.waitForSelector('.plugin-page[data-hydrated="true"] tr.param[data-name="mode"]');
  assert.match(await page.locator('h1').innerText(), /misbehave/);
  assert.match(await page.locator('.plugin-page').innerText(), /Uploaded by ops/);
  assert.deepEqual(errors, []);
});

test('a plugin author downloads a kit from the plugins page; Python and JavaScript plugins run as jobs', async () => {
  const { page, errors } = await open(ADA, 'plugins', '.plugins-page');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('#plugin-kits a:has-text("Python")'),
  ]);
  const archive = join(scratch, 'kit.tar.gz');
  await download.saveAs(archive);
  const listing = execFileSync('tar', ['-tzf', archive], { encoding: 'utf8' });
  for (const file of ['my-plugin/app.py', 'my-plugin/passage_plugin.py', 'my-plugin/build.sh', 'my-plugin/wit/plugin.wit']) {
    assert.ok(listing.includes(file), `${file} in ${listing}`);
  }

  // An admin uploads the Python and JavaScript vector-add, built as an author builds them.
  const { page: ops, errors: opsErrors } = await open(ADMIN, 'plugins', '.plugins-page');
  for (const lang of ['python', 'js']) {
    await ops.goto(`${portal.url}plugins`);
    await ops.waitForSelector('.plugins-page[data-hydrated="true"] #plugin-file');
    await ops.setInputFiles('#plugin-file', join(EXAMPLES, `vector-add-${lang}.wasm`));
    await Promise.all([ops.waitForURL(/\/plugins\/\d+$/), ops.click('#upload-plugin')]);
    await ops.waitForSelector('.plugin-page[data-hydrated="true"] tr.param[data-name="repetitions"]');
    assert.match(await ops.locator('h1').innerText(), new RegExp(`vector-add-${lang}`));
  }

  // A user runs each on a native host: the figures of the Rust vector-add, simulated, unverified.
  for (const lang of ['python', 'js']) {
    await page.goto(`${portal.url}plugins`);
    await page.click(`tr.plugin[data-name="vector-add-${lang}"] a`);
    await page.waitForSelector('.plugin-page[data-hydrated="true"] #run-plugin');
    await pick(page, '#run-target', 'bench-01');
    await page.fill('tr.param[data-name="repetitions"] input', '5');
    await Promise.all([page.waitForURL(/\/jobs\/\d+$/), page.click('#run-plugin')]);
    await page.waitForSelector('#job-state.succeeded', { timeout: 90_000 });
    assert.match(await page.locator('#job-verification').innerText(), /skipped/);
    for (const name of ['kernel time', 'effective bandwidth', 'elements']) {
      assert.equal(await page.locator(`#job-metrics tr.metric[data-name="${name}"]`).count(), 1, `${lang}: ${name}`);
    }
  }
  assert.deepEqual(errors, []);
  assert.deepEqual(opsErrors, []);
});
