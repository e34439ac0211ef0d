// End-to-end test of the admin dashboard served by the gateway at /admin/, driven through
// Debian's headless Chromium with playwright-core. Run by run.sh, or by hand:
//   TOPGUN_URL=http://127.0.0.1:PORT TOPGUN_ADMIN_PASSWORD=... [EXPECT_MAP=name] node --test dashboard.test.mjs

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.TOPGUN_URL || '').replace(/\/+$/, '');
const USERNAME = process.env.TOPGUN_ADMIN_USERNAME || 'admin';
const PASSWORD = process.env.TOPGUN_ADMIN_PASSWORD;
const EXPECT_MAP = process.env.EXPECT_MAP || '';
const SCREENSHOT = process.env.SCREENSHOT_PATH
  ? resolve(process.env.SCREENSHOT_PATH)
  : resolve(HERE, '../../docs/dashboard.png');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const TIMEOUT = 15_000;

assert.ok(BASE, 'TOPGUN_URL must be set (e.g. http://127.0.0.1:8080)');
assert.ok(PASSWORD, 'TOPGUN_ADMIN_PASSWORD must be set');

/** Polls `fn` until it returns a truthy value; returns that value. */
async function waitFor(fn, what, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function api(path, token, init = {}) {
  const res = await fetch(`${BASE}${path}`, {
    ...init,
    headers: { ...(init.headers || {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) },
  });
  const text = await res.text();
  return { status: res.status, body: text && res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text };
}

/** Sum of all samples of a metric in Prometheus text. */
function metricSum(text, name) {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = line.match(/^([\w:]+)(?:\{[^}]*\})?\s+(\S+)/);
    if (m && m[1] === name) total += Number(m[2]);
  }
  return total;
}

const numberIn = (text) => Number(text.replace(/[^\d.]/g, ''));

describe('TopGun admin dashboard', () => {
  let context;
  let page;
  let userDataDir;
  let token;
  const pageErrors = [];

  before(async () => {
    userDataDir = await mkdtemp(join(tmpdir(), 'topgun-dashboard-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 900 },
    });
    page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(TIMEOUT);
    page.on('pageerror', (err) => pageErrors.push(err.message));
  });

  after(async () => {
    await context?.close();
    if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
  });

  it('serves the SPA under /admin/ and shows the login screen', async () => {
    const res = await page.goto(`${BASE}/admin/`);
    assert.equal(res.status(), 200);
    await page.getByTestId('login-form').waitFor();
    assert.match(page.url(), /\/admin\/#\/login$/);
    // SPA fallback: a deep link also loads the app.
    const deep = await fetch(`${BASE}/admin/some/deep/link`);
    assert.equal(deep.status, 200);
    assert.match(await deep.text(), /<div id="app"/);
  });

  it('rejects a wrong password with the server message', async () => {
    await page.getByTestId('login-username').fill(USERNAME);
    await page.getByTestId('login-password').fill(`${PASSWORD}-wrong`);
    await page.getByTestId('login-submit').click();
    const error = page.getByTestId('login-error');
    await error.waitFor();
    assert.equal(await error.textContent(), 'invalid credentials');
    assert.equal(await page.evaluate(() => localStorage.getItem('topgun_admin_token')), null);
  });

  it('logs in, stores the token and opens the cluster view', async () => {
    await page.getByTestId('login-password').fill(PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('nodes-table').waitFor();
    assert.match(page.url(), /#\/cluster$/);
    token = await page.evaluate(() => localStorage.getItem('topgun_admin_token'));
    assert.ok(token && token.split('.').length === 3, 'a JWT is stored under topgun_admin_token');
    const check = await api('/api/admin/settings', token);
    assert.equal(check.status, 200, 'the stored token is accepted by the admin API');
  });

  it('shows the server status header from /api/status', async () => {
    const { body: status } = await api('/api/status');
    const header = page.getByTestId('server-status');
    await waitFor(async () => (await header.textContent()).includes(`v${status.version}`), 'version in header');
    assert.equal(await page.getByTestId('status-mode').textContent(), status.mode);
    assert.match(await page.getByTestId('status-uptime').textContent(), /^up \d/);
    assert.ok(await page.getByTestId('server-unavailable').isHidden());
  });

  it('shows cluster nodes and partition ownership matching the API', async () => {
    const { status, body } = await api('/api/admin/cluster/status', token);
    assert.equal(status, 200);
    const rows = page.getByTestId('node-row');
    assert.ok((await rows.count()) >= 1, 'at least one node row');
    assert.equal(await rows.count(), body.nodes.length);
    const first = body.nodes[0];
    const row = page.locator(`[data-testid="node-row"][data-node-id="${first.nodeId}"]`);
    assert.equal(await row.getAttribute('data-role'), first.role);
    assert.match(await row.textContent(), new RegExp(first.status));
    assert.equal(await page.getByTestId('cluster-node-count').textContent(), String(body.nodes.length));

    if (body.partitions.length > 0) {
      const owners = {};
      for (const p of body.partitions) owners[p.ownerNodeId] = (owners[p.ownerNodeId] || 0) + 1;
      const ownerRows = page.getByTestId('owner-row');
      assert.equal(await ownerRows.count(), Object.keys(owners).length);
      for (const [owner, count] of Object.entries(owners)) {
        const cell = page.locator(`[data-testid="owner-row"][data-owner="${owner}"] [data-testid="owner-count"]`);
        assert.equal(numberIn(await cell.textContent()), count, `partition count of ${owner}`);
      }
      // A sync node's partitionCount column agrees with the ownership table.
      for (const n of body.nodes.filter((x) => x.role === 'sync')) {
        assert.equal(n.partitionCount, owners[n.nodeId] || 0);
      }
    } else {
      await page.getByTestId('partition-owners-empty').waitFor();
    }
  });

  it('shows live metrics parsed from /metrics', async () => {
    const text = await (await fetch(`${BASE}/metrics`)).text();
    const ops = metricSum(text, 'topgun_operations_total');
    const msgsIn = metricSum(text, 'topgun_messages_in_total');
    const conns = metricSum(text, 'topgun_active_connections');
    if (EXPECT_MAP) assert.ok(ops >= 1 && msgsIn >= 2, 'the seeding write is visible in /metrics');
    const value = (id) => page.getByTestId(id).textContent();
    await waitFor(async () => numberIn(await value('metric-operations')) === ops, `operations = ${ops}`);
    await waitFor(async () => numberIn(await value('metric-messages-in')) === msgsIn, `messages in = ${msgsIn}`);
    assert.equal(numberIn(await value('metric-connections')), conns);
    // After a second poll (every 2 s) the rate line appears.
    await waitFor(async () => /\d\/s/.test(await page.locator('.metric .sub').nth(1).textContent()), 'operations rate');
  });

  it('lists maps, hiding system maps', async () => {
    await page.getByTestId('nav-maps').click();
    await page.getByTestId('maps-view').waitFor();
    const { body } = await api('/api/admin/maps', token);
    const visible = body.maps.filter((m) => !m.name.startsWith('__') && !m.name.startsWith('$sys/') && m.name !== '_empty');
    if (EXPECT_MAP) {
      const row = page.locator(`[data-testid="map-row"][data-map-name="${EXPECT_MAP}"]`);
      await row.waitFor();
      assert.equal(await row.getByTestId('map-name').textContent(), EXPECT_MAP);
      const expected = body.maps.find((m) => m.name === EXPECT_MAP);
      assert.ok(expected, `${EXPECT_MAP} is in /api/admin/maps`);
      assert.ok(expected.entryCount >= 1);
      assert.equal(numberIn(await row.getByTestId('map-entries').textContent()), expected.entryCount);
      assert.match(await row.textContent(), expected.kind === 'or' ? /OR-Map/ : /LWW-Map/);
    }
    if (visible.length === 0) {
      await page.getByTestId('maps-empty').waitFor();
    } else {
      await page.getByTestId('maps-table').waitFor();
      const names = await page.getByTestId('map-name').allTextContents();
      assert.deepEqual(names, visible.map((m) => m.name).sort((a, b) => a.localeCompare(b)));
      assert.ok(names.every((n) => !n.startsWith('__') && !n.startsWith('$sys/')));
    }
  });

  it('edits maxConcurrentOperations, sending only the changed key', async () => {
    await page.getByTestId('nav-settings').click();
    const shown = page.getByTestId('setting-value-maxConcurrentOperations');
    await shown.waitFor();
    const { body: before } = await api('/api/admin/settings', token);
    for (const key of ['nodeId', 'host', 'port', 'partitionCount', 'gcIntervalMs', 'maxConcurrentOperations']) {
      assert.equal(await page.getByTestId(`setting-value-${key}`).textContent(), String(before[key]), key);
    }
    const current = before.maxConcurrentOperations;
    const next = current + 17 <= 1_000_000 ? current + 17 : current - 17;

    await page.getByTestId('setting-input-maxConcurrentOperations').fill(String(next));
    const [req, res] = await Promise.all([
      page.waitForRequest((r) => r.url().endsWith('/api/admin/settings') && r.method() === 'PUT'),
      page.waitForResponse((r) => r.url().endsWith('/api/admin/settings') && r.request().method() === 'PUT'),
      page.getByTestId('settings-save').click(),
    ]);
    assert.deepEqual(req.postDataJSON(), { maxConcurrentOperations: next }, 'PUT carries only the changed key');
    assert.equal(res.status(), 200);

    await waitFor(async () => (await page.getByTestId('settings-message').textContent()).includes('maxConcurrentOperations'), 'save confirmation');
    assert.equal(await shown.textContent(), String(next), 'UI shows the saved value');
    assert.equal(await page.getByTestId('setting-input-maxConcurrentOperations').inputValue(), String(next));

    const { status, body: after } = await api('/api/admin/settings', token);
    assert.equal(status, 200);
    assert.equal(after.maxConcurrentOperations, next, 'GET /api/admin/settings returns the saved value');
    assert.equal(after.gcIntervalMs, before.gcIntervalMs, 'untouched settings keep their value');
  });

  it('shows the server error message for an invalid setting', async () => {
    const { body: before } = await api('/api/admin/settings', token);
    await page.getByTestId('setting-input-gcIntervalMs').fill('5');
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/admin/settings') && r.request().method() === 'PUT'),
      page.getByTestId('settings-save').click(),
    ]);
    assert.equal(res.status(), 400);
    const { message } = await res.json();
    assert.ok(message, '400 body carries a message');
    const error = page.getByTestId('settings-error');
    await error.waitFor();
    assert.equal(await error.textContent(), message);
    assert.match(await page.getByTestId('setting-input-gcIntervalMs').getAttribute('class'), /invalid/);
    const { body: after } = await api('/api/admin/settings', token);
    assert.equal(after.gcIntervalMs, before.gcIntervalMs, 'a rejected PUT changes nothing');
    await page.getByTestId('settings-reset').click();
    assert.equal(await page.getByTestId('setting-input-gcIntervalMs').inputValue(), String(before.gcIntervalMs));
  });

  it('saves a screenshot of the cluster view', async () => {
    await page.getByTestId('nav-cluster').click();
    await page.getByTestId('nodes-table').waitFor();
    await waitFor(async () => /\d\/s/.test(await page.locator('.metric .sub').nth(1).textContent()), 'metrics painted');
    await mkdir(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    const { size } = await stat(SCREENSHOT);
    assert.ok(size > 10_000, `screenshot at ${SCREENSHOT} has content (${size} bytes)`);
  });

  it('returns to the login screen and clears the token on a 401', async () => {
    await page.evaluate(() => localStorage.setItem('topgun_admin_token', 'not-a-valid-token'));
    await page.getByTestId('nav-maps').click();
    await page.getByTestId('login-form').waitFor();
    await page.getByTestId('login-notice').waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('topgun_admin_token')), null);
    assert.match(page.url(), /#\/login$/);
  });

  it('raised no uncaught page errors', () => {
    assert.deepEqual(pageErrors, []);
  });
});
