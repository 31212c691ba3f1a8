// Accounts in the browser: a user changes her password (her other browser is signed out) and
// makes a token that expires; an admin disables and enables an account, cannot demote the last
// admin, and deletes an account; a user who is not an admin is refused the Users page.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openAs, startPortal } from './portal.mjs';

const ADMIN = { name: 'ops', password: 'operator password', admin: true };
const ADA = { name: 'ada', password: 'analytical engine', admin: false };
const BOB = { name: 'bob', password: 'difference engine', admin: false };

let portal;
let browser;

before(async () => {
  portal = await startPortal('hosts = []\n', [ADMIN, ADA, BOB]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await portal?.stop();
});

function open(account, path, ready) {
  return openAs(browser, portal, account, path, ready);
}

async function signInStatus(name, password) {
  const response = await fetch(`${portal.url}api/v1/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name, password }),
  });
  return response.status;
}

test('a user changes her password and her other browser is signed out', async () => {
  const { page: other } = await open(ADA, 'account', '.account-page');
  const { page, errors } = await open(ADA, 'account', '.account-page');
  await page.fill('#current-password', 'not her password');
  await page.fill('#new-password', 'a brand new passphrase');
  await page.fill('#new-password-again', 'a brand new passphrase');
  await page.click('#change-password');
  await page.waitForSelector('#password-error');
  assert.match(await page.locator('#password-error').innerText(), /current password is not right/);

  await page.fill('#current-password', ADA.password);
  await page.fill('#new-password', 'a brand new passphrase');
  await page.fill('#new-password-again', 'a brand new passphrase');
  await page.click('#change-password');
  await page.waitForSelector('#password-changed');
  assert.equal(await signInStatus('ada', ADA.password), 401);
  assert.equal(await signInStatus('ada', 'a brand new passphrase'), 200);

  // This browser stays signed in; the other one is not any more.
  await page.reload();
  await page.waitForSelector('.account-page[data-hydrated="true"]');
  assert.match(await page.locator('#viewer').innerText(), /^ada$/);
  await other.goto(portal.url);
  await other.waitForSelector('#sign-in-prompt');
  ADA.password = 'a brand new passphrase';
  assert.deepEqual(errors, []);
});

test('a token made to expire shows when', async () => {
  const { page, errors } = await open(ADA, 'account', '.account-page');
  await page.fill('#token-name', 'for-a-month');
  await page.selectOption('#token-expiry', '30');
  await page.click('#create-token');
  await page.waitForSelector('#new-token');
  const row = page.locator('tr.token[data-name="for-a-month"]');
  await row.waitFor();
  const expires = await row.locator('td.expires').innerText();
  const days = (Date.parse(expires.trim()) - Date.now()) / 86_400_000;
  assert.ok(days > 29 && days < 31, `expires ${expires}`);
  assert.deepEqual(errors, []);
});

test('an admin disables, enables and deletes accounts, and keeps an admin', async () => {
  const { page, errors } = await open(ADMIN, 'users', '.users-page');
  const bob = page.locator('tr.account[data-name="bob"]');
  assert.equal(await bob.getAttribute('data-state'), 'enabled');
  assert.equal(await page.locator('tr.account').count(), 3);

  await bob.locator('button[data-action="disable"]').click();
  await page.waitForSelector('tr.account[data-name="bob"][data-state="disabled"]');
  assert.equal(await signInStatus('bob', BOB.password), 403);
  const login = await (await browser.newContext()).newPage();
  await login.goto(`${portal.url}login`);
  await login.fill('input[name="name"]', 'bob');
  await login.fill('input[name="password"]', BOB.password);
  await Promise.all([login.waitForURL(/error=disabled/), login.click('#sign-in')]);
  assert.match(await login.locator('#login-error').innerText(), /disabled/);

  await page.locator('tr.account[data-name="bob"] button[data-action="enable"]').click();
  await page.waitForSelector('tr.account[data-name="bob"][data-state="enabled"]');
  assert.equal(await signInStatus('bob', BOB.password), 200);

  // The only admin cannot step down.
  await page.locator('tr.account[data-name="ops"] button[data-action="demote"]').click();
  await page.waitForSelector('#account-error');
  assert.match(await page.locator('#account-error').innerText(), /last enabled admin/);

  await page.locator('tr.account[data-name="bob"] details.delete summary').click();
  await page.locator('tr.account[data-name="bob"] button[data-action="delete"]').click();
  await page.waitForFunction(() => !document.querySelector('tr.account[data-name="bob"]'));
  assert.equal(await signInStatus('bob', BOB.password), 401);
  assert.deepEqual(errors, []);
});

test('a user who is not an admin is refused the Users page', async () => {
  const { page, errors } = await open(ADA, 'users', '.users-page');
  await page.waitForSelector('#accounts-error');
  assert.match(await page.locator('#accounts-error').innerText(), /only admins/);
  assert.deepEqual(errors, []);
});
