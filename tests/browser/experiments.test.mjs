// Experiments from the browser, on the simulated GPU backend (and labelled so everywhere): a user
// makes an experiment over two native hosts, watches it to the end, opens its charts, downloads
// its CSV and finds the API's numbers in it; then the study's comparison: the study's suite on a
// native host and on VMs with 1 and 2 vCPUs under KVM and Xen that the portal requests, an admin
// approves at once, and the portal releases when the experiment ends. Screenshots of both
// results pages are kept as artifacts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { addNativeHost, launchBrowser, openAs, startAgent, startPortal } from './portal.mjs';

const ADMIN = { name: 'ops', password: 'operator password', admin: true };
const ADA = { name: 'ada', password: 'analytical engine', admin: false };

const BIN = resolve(process.env.PASSAGE_BIN ?? '../../target/debug/passage');
const ARTIFACTS = process.env.SCREENSHOT_DIR ?? join(dirname(BIN), '..', 'artifacts');

let portal;
let browser;
const agents = [];
const scratch = mkdtempSync(join(tmpdir(), 'passage-experiments-'));

before(async () => {
  portal = await startPortal(
    '[agents]\nheartbeat_secs = 1\noffline_after_secs = 30\n[quotas]\ngpus = 8\nrequests = 8\n',
    [ADMIN, ADA],
  );
  browser = await launchBrowser();
  mkdirSync(ARTIFACTS, { recursive: true });
  const { page } = await openAs(browser, portal, ADMIN, 'agents', '.agents-page');
  await addNativeHost(page, portal.url, 'bench-01', { scratch, agents });
  await page.reload();
  await page.waitForSelector('.agents-page[data-hydrated="true"]');
  await addNativeHost(page, portal.url, 'bench-02', { scratch, agents });
});

after(async () => {
  for (const agent of agents) agent.kill('SIGKILL');
  await browser?.close();
  await portal?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** Ticks the agent checkbox whose label names `name`. */
async function chooseAgent(page, name) {
  await page.locator('#agent-choices li', { hasText: name }).locator('input.agent-choice').check();
}

/** Every chart on the page is drawn (loaded, with a size) and is an SVG with axes and a title. */
async function chartsAreDrawn(page) {
  const images = page.locator('figure.chart img');
  const count = await images.count();
  assert.ok(count > 0, 'charts on the page');
  // Lazily loaded images load once scrolled into view.
  for (let i = 0; i < count; i++) await images.nth(i).scrollIntoViewIfNeeded();
  await page.waitForFunction(() => [...document.querySelectorAll('figure.chart img')]
    .every((img) => img.complete && img.naturalWidth > 0), null, { timeout: 30_000 });
  const urls = await images.evaluateAll((all) => all.map((img) => img.getAttribute('src')));
  for (const url of urls) {
    const response = await page.request.get(`${portal.url}${url.replace(/^\//, '')}`);
    assert.equal(response.status(), 200, url);
    assert.equal(response.headers()['content-type'], 'image/svg+xml');
    const svg = await response.text();
    assert.match(svg, /<svg/);
    assert.match(svg, /simulated GPU/, `${url} says it is simulated`);
  }
  return urls;
}

test('an experiment over two native hosts is made, watched, charted and exported', async () => {
  const { page, errors } = await openAs(browser, portal, ADA, 'experiments', '.experiments-page');
  await page.fill('#experiment-name', 'two hosts');
  await page.check('#choose-plugins');
  await page.locator('input.plugin-choice[data-plugin="vector-add"]').check();
  await page.fill('input.plugin-params[data-plugin="vector-add"]', 'elements=4096');
  await page.locator('input.plugin-choice[data-plugin="bandwidth-test"]').check();
  await chooseAgent(page, 'bench-01');
  await chooseAgent(page, 'bench-02');
  await page.fill('#experiment-repetitions', '0');
  await page.click('#create-experiment');
  assert.match(await page.locator('#experiment-error').innerText(), /repetitions/);
  await page.fill('#experiment-repetitions', '3');
  await Promise.all([page.waitForURL(/\/experiments\/\d+$/), page.click('#create-experiment')]);
  const id = page.url().match(/\/experiments\/(\d+)$/)[1];
  await page.waitForSelector('.experiment-page[data-hydrated="true"]');
  await page.waitForSelector('#experiment-state.succeeded', { timeout: 120_000 });
  assert.match(await page.locator('#simulated-banner').innerText(), /SIMULATED/);
  assert.match(await page.locator('#experiment-jobs').innerText(), /12 of 12 jobs ended \(0 failed\)/);
  assert.equal(await page.locator('tr.target').count(), 2);

  const charts = await chartsAreDrawn(page);
  for (const name of ['times-0', 'times-1', 'bandwidth-0', 'overhead-real-time']) {
    assert.ok(charts.some((c) => c.includes(`/charts/${name}.svg`)), `${name} in ${charts}`);
  }
  assert.ok(await page.locator('section[data-section="times"] table.numbers td.cell').count() >= 4, 'the numbers beside the chart');
  assert.ok(await page.locator('tr.overhead').count() > 0);
  await page.screenshot({ path: join(ARTIFACTS, 'experiment-two-hosts.png'), fullPage: true });

  // The CSV the page offers holds every number the API shows.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv-link')]);
  const csv = readFileSync(await download.path(), 'utf8').trim().split('\n');
  const header = csv[0].split(',');
  const at = (name) => header.indexOf(name);
  const fromCsv = new Map(csv.slice(1).map((line) => {
    const cells = line.split(',');
    return [`${cells[at('job')]} ${cells[at('metric')]}`, Number(cells[at('value')])];
  }));
  const api = await (await page.request.get(`${portal.url}api/v1/experiments/${id}`)).json();
  const fromApi = new Map();
  for (const figure of api.figures) {
    for (const cell of figure.cells) {
      for (const sample of cell.samples) fromApi.set(`${sample.job} ${figure.metric}`, sample.value);
    }
  }
  assert.ok(fromApi.size > 0);
  assert.deepEqual(fromCsv, fromApi);

  // A chart opened on its own, the report, and the experiment compared with itself.
  await page.goto(`${portal.url}${charts[0].replace(/^\//, '')}`);
  assert.match(await page.content(), /<svg/);
  await page.goto(`${portal.url}experiments/${id}/report`);
  await page.waitForSelector('.report-page[data-hydrated="true"] figure.chart');
  assert.match(await page.locator('.report-page').innerText(), /Method[\s\S]*rotated/);
  assert.match(await page.locator('.report-page p.study-finding').first().innerText(), /The 2012 study/);
  await page.goto(`${portal.url}experiments/compare?a=${id}&b=${id}`);
  await page.waitForSelector('.compare-page[data-hydrated="true"] #comparison tr.comparison-row');
  assert.match(await page.locator('#comparison').innerText(), /no difference shown/);
  assert.deepEqual(errors, []);

  const { page: ops } = await openAs(browser, portal, ADMIN, 'experiments', '.experiments-page');
  await ops.waitForSelector(`tr.experiment[data-id="${id}"]`);
  assert.match(await ops.locator(`tr.experiment[data-id="${id}"]`).innerText(), /ada/);
});

/** The agent token a VM's seed carries, read as the guest reads it (admins see the domain). */
async function seedToken(page, vm) {
  const xml = await (await page.request.get(`${portal.url}api/v1/vms/${vm}/domain`)).text();
  const marker = 'ds=nocloud-net;s=';
  const start = xml.indexOf(marker) + marker.length;
  const seed = new URL(xml.slice(start, xml.indexOf('<', start)).replaceAll('&amp;', '&'));
  // The seed names the configured address (port 0 here); the portal is where it listens.
  const url = new URL(`${seed.pathname}user-data${seed.search}`, portal.url);
  const userData = await (await fetch(url)).text();
  return userData.match(/psa_[0-9a-f]{64}/)[0];
}

test("the study's comparison: native against VMs by vCPU count and hypervisor", async () => {
  const { page, errors } = await openAs(browser, portal, ADA, 'experiments', '.experiments-page');
  await page.fill('#experiment-name', 'the study, again');
  await page.check('#preset-study');
  await chooseAgent(page, 'bench-01');
  await page.check('#make-vms');
  await page.selectOption('#variant-model', 'H100 PCIe');
  await page.fill('#variant-vcpus', '1,2');
  await page.check('#variant-kvm');
  await page.check('#variant-xen');
  await page.fill('#experiment-repetitions', '2');
  await Promise.all([page.waitForURL(/\/experiments\/\d+$/), page.click('#create-experiment')]);
  const id = page.url().match(/\/experiments\/(\d+)$/)[1];
  await page.waitForSelector('.experiment-page[data-hydrated="true"] tr.target');
  const labels = await page.locator('tr.target td:first-child').allInnerTexts();
  assert.deepEqual(labels, ['native bench-01', 'KVM 1 vCPU', 'KVM 2 vCPU', 'XEN 1 vCPU', 'XEN 2 vCPU']);
  assert.match(await page.locator('#targets').innerText(), /waiting for approval of request/);
  assert.equal(await page.locator('#approve-experiment').count(), 0, 'only admins approve');

  const { page: ops, errors: opsErrors } = await openAs(browser, portal, ADMIN, `experiments/${id}`, '.experiment-page');
  await ops.click('#approve-experiment');
  await ops.waitForFunction(() => [...document.querySelectorAll('tr.target .target-status')].slice(1)
    .every((s) => s.textContent.startsWith('waiting for the agent')), null, { timeout: 60_000 });
  const api = await (await ops.request.get(`${portal.url}api/v1/experiments/${id}`)).json();
  for (const target of api.targets.filter((t) => t.kind === 'variant')) {
    startAgent(portal.url, await seedToken(ops, target.vm_id), { name: `vm-${target.vm_id}`, scratch, agents });
  }

  await page.waitForSelector('#experiment-state.succeeded', { timeout: 300_000 });
  const jobs = await (await page.request.get(`${portal.url}api/v1/jobs?batch=experiment-${id}`)).json();
  const failed = jobs.filter((j) => j.state !== 'succeeded').map((j) => `${j.label} on ${j.target}: ${j.error}`);
  assert.equal(jobs.length, 150);
  assert.deepEqual(failed, []);
  await page.waitForFunction(() => [...document.querySelectorAll('tr.target .target-status')].slice(1)
    .every((s) => s.textContent === 'released'), null, { timeout: 60_000 });
  const charts = await chartsAreDrawn(page);
  for (const name of ['times-0', 'times-14', 'overhead-real-time', 'vcpus', 'sizes-vector-add']) {
    assert.ok(charts.some((c) => c.includes(`/charts/${name}.svg`)), `${name} in ${charts}`);
  }
  assert.ok(charts.some((c) => /\/charts\/bandwidth-\d+\.svg/.test(c)), 'bandwidth by direction');
  const overheads = await page.locator('section[data-section="all-overheads"] tr.overhead').allInnerTexts();
  for (const label of ['KVM 1 vCPU', 'KVM 2 vCPU', 'XEN 1 vCPU', 'XEN 2 vCPU']) {
    assert.ok(overheads.some((row) => row.includes(label)), `${label} against native`);
  }
  await page.screenshot({ path: join(ARTIFACTS, 'experiment-study.png'), fullPage: true });
  await page.goto(`${portal.url}experiments/${id}/report`);
  await page.waitForSelector('.report-page[data-hydrated="true"] figure.chart');
  await page.screenshot({ path: join(ARTIFACTS, 'experiment-study-report.png'), fullPage: true });
  assert.deepEqual(errors, []);
  assert.deepEqual(opsErrors, []);
});
