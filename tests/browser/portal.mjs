// Starts a real `passage serve` for a test, on a free port with its own data directory,
// and a headless Chromium to look at it.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.PASSAGE_BIN ?? '../../target/debug/passage';

/**
 * Starts the portal with `configToml` (listen and data_dir are filled in), after creating
 * `users` ({ name, password, admin }) with `passage user add`.
 */
export async function startPortal(configToml = '', users = []) {
  const dir = mkdtempSync(join(tmpdir(), 'passage-browser-'));
  const configFile = join(dir, 'passage.toml');
  writeFileSync(configFile, `listen = "127.0.0.1:0"\ndata_dir = "${dir}"\n${configToml}`);
  const env = { ...process.env, PASSAGE_LOG: 'warn' };
  delete env.PASSAGE_LISTEN;
  delete env.PASSAGE_DATABASE_URL;
  delete env.PASSAGE_DATA_DIR;
  for (const user of users) {
    const args = ['user', 'add', user.name, '--config', configFile, ...(user.admin ? ['--admin'] : [])];
    const added = spawnSync(BIN, args, { env, input: `${user.password}\n`, encoding: 'utf8' });
    if (added.status !== 0) throw new Error(`passage user add ${user.name}: ${added.stderr}`);
  }
  const child = spawn(BIN, ['serve', '--config', configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`portal did not start:\n${output}`)), 30_000);
    const onData = (chunk) => {
      output += chunk;
      const match = output.match(/Passage is running at (http:\/\/\S+)/);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`portal exited (${code}):\n${output}`)); });
  });
  return {
    url,
    output: () => output,
    async stop() {
      const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      child.kill('SIGTERM');
      const result = await exited;
      rmSync(dir, { recursive: true, force: true });
      return result;
    },
  };
}

/** A headless Chromium with the flags that work without a network. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** Signs in through the login page and waits for the hydrated hosts page. */
export async function signIn(page, url, name, password) {
  await page.goto(url.replace(/\/$/, '') + '/login');
  await page.fill('input[name="name"]', name);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('#sign-in')]);
  await page.waitForSelector('[data-hydrated="true"]', { timeout: 30_000 });
}

/**
 * Collects into `errors` what goes wrong on `page`: uncaught exceptions, and anything the
 * Content-Security-Policy refuses (the browser reports it on the console).
 */
export function watchErrors(page, errors) {
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/.test(message.text())) errors.push(message.text());
  });
}

/** A new signed-in page of `account` at `path`, hydrated; errors on it go to `errors`. */
export async function openAs(browser, portal, account, path, ready) {
  const page = await (await browser.newContext({ acceptDownloads: true })).newPage();
  const errors = [];
  watchErrors(page, errors);
  await signIn(page, portal.url, account.name, account.password);
  await page.goto(`${portal.url}${path}`);
  await page.waitForSelector(`${ready}[data-hydrated="true"]`, { timeout: 30_000 });
  return { page, errors };
}

/**
 * Starts `passage-agent serve` on the simulated backend with `devices` GPUs and `token`; the
 * process is added to `agents` (kill them when done) and caches under `scratch`.
 */
export function startAgent(portalUrl, token, { name, scratch, agents, devices = 1 }) {
  const bin = resolve(process.env.PASSAGE_BIN ?? '../../target/debug/passage');
  const agentBin = process.env.PASSAGE_AGENT_BIN ?? join(dirname(bin), 'passage-agent');
  const agent = spawn(agentBin, ['serve', '--server', portalUrl, '--backend', 'fake',
    '--fake-devices', String(devices), '--cache-dir', join(scratch, name)],
  { env: { ...process.env, PASSAGE_AGENT_TOKEN: token }, stdio: 'ignore' });
  agents.push(agent);
  return agent;
}

/** Registers a native host on the (admin's, open) agents page and starts its agent. */
export async function addNativeHost(page, portalUrl, name, options) {
  await page.fill('#native-host-name', name);
  await page.click('#add-native-host');
  const token = (await page.locator('#new-agent-token').innerText()).trim();
  if (!/^psa_[0-9a-f]{64}$/.test(token)) throw new Error(`not an agent token: ${token}`);
  startAgent(portalUrl, token, { name, ...options });
  await page.waitForSelector(`tr.agent[data-name="${name}"][data-status="online"]`, { timeout: 30_000 });
}
