// A GPU VM end to end in the browser: a user requests, an admin approves onto chosen GPUs, the
// user sees the VM running with its GPUs, opens its console page, shuts it down, starts it and
// releases it; another user cannot see it; the admin reads it all in the audit log.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openAs, startPortal } from './portal.mjs';

const ADMIN = { name: 'ops', password: 'operator password', admin: true };
const ADA = { name: 'ada', password: 'analytical engine', admin: false };
const BOB = { name: 'bob', password: 'difference engine', admin: false };

let portal;
let browser;

before(async () => {
  portal = await startPortal('[vms]\nshutdown_grace_secs = 1\n', [ADMIN, ADA, BOB]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await portal?.stop();
});

function open(account, path, ready) {
  return openAs(browser, portal, account, path, ready);
}

test('a VM is requested, approved, run, reached and released', async () => {
  const { page: ada, errors } = await open(ADA, 'account', '.account-page');
  await ada.fill('#ssh-key', 'not a key');
  await ada.click('#save-ssh-key');
  await ada.waitForSelector('#ssh-key-error');
  await ada.fill('#ssh-key', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKqexample ada@laptop');
  await ada.click('#save-ssh-key');
  await ada.waitForSelector('#ssh-key-saved');

  await ada.goto(`${portal.url}requests`);
  await ada.waitForSelector('.requests-page[data-hydrated="true"]');
  await ada.selectOption('select[name="form[gpu_model]"]', 'H100 PCIe');
  await ada.fill('input[name="form[gpu_count]"]', '2');
  await ada.fill('input[name="form[reason]"]', 'rerun the passthrough study');
  await ada.click('#file-request');
  await ada.waitForSelector('tr.request[data-state="pending"]');
  const request = await ada.locator('tr.request').first().getAttribute('data-id');
  assert.equal(await ada.locator('button.approve').count(), 0, 'users cannot approve');

  // The admin picks two GPUs that are not the scheduler's first choice.
  const { page: ops } = await open(ADMIN, 'requests', '.requests-page');
  const row = ops.locator(`tr.request[data-id="${request}"]`);
  await row.locator('input.gpu-choice').fill('0000:3d:00.0, 0000:4e:00.0');
  await row.locator('button.approve').click();
  await ops.waitForSelector(`tr.request[data-id="${request}"][data-state="placed"]`);

  // Ada's VM list fills in by itself and shows it running.
  await ada.goto(`${portal.url}vms`);
  await ada.waitForSelector('.vms-page[data-hydrated="true"]');
  await ada.waitForSelector('tr.vm[data-state="running"]', { timeout: 15_000 });
  const vm = await ada.locator('tr.vm').first().getAttribute('data-id');
  assert.match(await ada.locator('tr.vm td.gpus').innerText(), /0000:3d:00\.0, 0000:4e:00\.0/);

  await ada.click(`a[href="/vms/${vm}"]`);
  await ada.waitForSelector('#vm-state.running');
  assert.equal(await ada.locator('#vm-host').innerText(), 'simulated');
  assert.equal(await ada.locator('#vm-domain').innerText(), `passage-vm-${vm} test`);
  assert.deepEqual(await ada.locator('#vm-gpus li').allInnerTexts(), ['0000:3d:00.0', '0000:4e:00.0']);
  assert.match(await ada.locator('#vm-ssh').innerText(), /ssh ada@/);
  // The simulated host has no display; the console page itself still loads noVNC and says so.
  assert.match(await ada.locator('#console-link').innerText(), /no display/);
  await ada.goto(`${portal.url}vms/${vm}/console`);
  await ada.waitForFunction(
    () => document.querySelector('#console-screen')?.dataset.connected === 'false',
    null,
    { timeout: 15_000 },
  );
  assert.match(await ada.locator('#console-status').innerText(), /console closed/);

  // The admin attaches a free GPU from the VM page, then detaches another.
  const { page: opsVm } = await open(ADMIN, `vms/${vm}`, '.vm-page');
  await opsVm.fill('#attach-gpu', '0000:17:00.0');
  await opsVm.click('#vm-attach');
  await opsVm.waitForFunction(() => document.querySelectorAll('#vm-gpus li').length === 3);
  await opsVm.locator('#vm-gpus li', { hasText: '0000:3d:00.0' }).locator('button.detach').click();
  await opsVm.waitForFunction(() => document.querySelectorAll('#vm-gpus li').length === 2);
  assert.match(await opsVm.locator('#vm-gpus').innerText(), /0000:17:00\.0[\s\S]*0000:4e:00\.0/);

  // Bob sees nothing of it, even by address.
  const { page: bob } = await open(BOB, 'vms', '.vms-page');
  await bob.waitForSelector('#no-vms');
  await bob.goto(`${portal.url}vms/${vm}`);
  await bob.waitForSelector('#no-such-vm');

  // Shut down, start, release.
  await ada.goto(`${portal.url}vms/${vm}`);
  await ada.waitForSelector('.vm-page[data-hydrated="true"]');
  await ada.click('#vm-stop');
  await ada.waitForSelector('#vm-state.stopped', { timeout: 15_000 });
  await ada.click('#vm-start');
  await ada.waitForSelector('#vm-state.running', { timeout: 15_000 });
  assert.equal(await ada.locator('#vm-extend').count(), 0, 'only admins extend leases');
  await ada.click('#vm-release');
  await ada.waitForSelector('#vm-state.released', { timeout: 15_000 });

  // The admin's audit log has the story, and filters it.
  const { page: audit } = await open(ADMIN, 'audit', '.audit-page');
  await audit.fill('#audit-subject', `vm ${vm}`);
  await audit.press('#audit-subject', 'Enter');
  await audit.waitForSelector('tr.audit-entry[data-action="vm.release"]');
  const actions = await audit.locator('tr.audit-entry').evaluateAll((rows) => rows.map((r) => r.dataset.action));
  for (const action of ['vm.provision', 'vm.stop', 'vm.start', 'vm.release']) {
    assert.ok(actions.includes(action), `${action} in ${actions}`);
  }
  const { page: bobAudit } = await open(BOB, 'audit', '.audit-page');
  await bobAudit.waitForSelector('.audit-page .error');
  assert.deepEqual(errors, []);
});

test('a user makes an API token in the browser, uses it, and revokes it', async () => {
  const { page, errors } = await open(BOB, 'account', '.account-page');
  await page.fill('#token-name', 'nightly');
  await page.click('#create-token');
  const secret = (await page.locator('#new-token').innerText()).trim();
  assert.match(secret, /^psg_[0-9a-f]{64}$/);
  await page.waitForSelector('tr.token[data-name="nightly"] button.revoke');
  const me = await fetch(`${portal.url}api/v1/me`, { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(me.status, 200);
  assert.equal((await me.json()).name, 'bob');
  await page.click('tr.token[data-name="nightly"] button.revoke');
  await page.waitForSelector('tr.token[data-name="nightly"] .revoked');
  const after = await fetch(`${portal.url}api/v1/me`, { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(after.status, 401);
  assert.deepEqual(errors, []);
});
